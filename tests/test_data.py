"""Data layer: shapes, imagefolder, preprocessing, and every kind of bad image."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tokzoo.data import SkipCounter, build_dataset, collate
from tokzoo.data.images import load_rgb
from tokzoo.data.preprocess import center_crop_uint8
from tokzoo.data.shapes import CLASSES, ShapesDataset
from tokzoo.errors import DataError


def test_shapes_is_deterministic_and_labelled():
    a = ShapesDataset("train", resolution=32, train_size=64)
    b = ShapesDataset("train", resolution=32, train_size=64)
    for i in (0, 5, 63):
        assert torch.equal(a[i]["image"], b[i]["image"])
        assert a[i]["caption"] == b[i]["caption"]
    assert not torch.equal(a[0]["image"], ShapesDataset("val", resolution=32)[0]["image"])
    assert not torch.equal(a[0]["image"], ShapesDataset("train", resolution=32, seed=1)[0]["image"])
    labels = {a[i]["label"] for i in range(64)}
    assert len(CLASSES) >= 10 and len(labels) >= 8
    s = a[3]
    assert s["image"].shape == (3, 32, 32) and 0 <= s["image"].min() and s["image"].max() <= 1
    assert CLASSES[s["label"]] in s["caption"]
    assert ShapesDataset("val", resolution=48)[0]["image"].shape == (3, 48, 48)


def test_shapes_caption_styles_share_images():
    full, obj, shape = (ShapesDataset("train", resolution=32, train_size=8, captions=c)[2] for c in ("full", "object", "shape"))
    assert torch.equal(full["image"], shape["image"]) and full["label"] == shape["label"]
    name = CLASSES[full["label"]]
    assert shape["caption"] == f"a {name}"
    assert obj["caption"].endswith(name) and len(obj["caption"].split()) == 3
    assert " on " in full["caption"] and name in full["caption"]
    from tokzoo.errors import ConfigError
    with pytest.raises(ConfigError, match="captions must be one of"):
        ShapesDataset("train", captions="long")


def test_shapes_has_natural_image_content():
    """Backgrounds are not flat: real photo crops carry high-frequency detail."""
    ds = ShapesDataset("train", resolution=64, train_size=32)
    stds = [ds[i]["image"].std().item() for i in range(32)]
    assert np.median(stds) > 0.1


def test_synthetic_is_deterministic_cheap_and_8bit():
    ds = build_dataset({"name": "synthetic", "resolution": 64, "val_size": 8}, "val")
    assert len(ds) == 8
    a, b = ds[3], build_dataset({"name": "synthetic", "resolution": 64, "val_size": 8}, "val")[3]
    assert torch.equal(a["image"], b["image"]) and a["label"] == b["label"]
    assert a["image"].shape == (3, 64, 64) and a["image"].min() == 0 and a["image"].max() == 1
    assert torch.equal((a["image"] * 255).round() / 255, a["image"])  # exactly representable in uint8
    assert not torch.equal(a["image"], ds[4]["image"])
    assert f"class {a['label']}" in a["caption"]
    with pytest.raises(DataError, match="splits"):
        build_dataset({"name": "synthetic"}, "holdout")


def test_center_crop_follows_adm():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8))
    out = center_crop_uint8(img, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    # reference: box-halve while the short side >= 128 (300 -> 150 -> 75), bicubic to 64, centre crop
    ref = img.resize((250, 150), Image.BOX).resize((125, 75), Image.BOX)
    ref = ref.resize((round(125 * 64 / 75), 64), Image.BICUBIC)
    ref = np.asarray(ref)
    left = (ref.shape[1] - 64) // 2
    assert np.array_equal(out, ref[:, left:left + 64])


def _save(img: Image.Image, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


@pytest.fixture
def odd_folder(tmp_path):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    root = tmp_path / "imgs"
    _save(rgb, root / "cat" / "ok.png")
    _save(rgb.convert("L"), root / "cat" / "gray.png")
    _save(rgb.convert("CMYK"), root / "cat" / "cmyk.jpg")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(0)  # fully transparent -> white
    _save(rgba, root / "dog" / "rgba.png")
    g16 = Image.fromarray((np.full((40, 40), 65535)).astype(np.uint16))
    _save(g16, root / "dog" / "sixteen.png")
    _save(rgb.resize((8, 8)), root / "dog" / "tiny.png")
    (root / "dog" / "notes.jpg").write_text("this is not a jpeg")
    full = root / "dog" / "full.png"
    _save(rgb, full)
    data = full.read_bytes()
    (root / "dog" / "truncated.png").write_bytes(data[: len(data) // 2])
    with open(root / "captions.jsonl", "w") as f:
        f.write(json.dumps({"file": "cat/ok.png", "caption": "a noisy cat"}) + "\n")
    return root


def test_every_odd_image_is_converted_or_skipped_visibly(odd_folder, capsys):
    ds = build_dataset({"name": "imagefolder", "path": str(odd_folder), "resolution": 16, "val_fraction": 0.0}, "train")
    assert ds.classes == ("cat", "dog") and len(ds) == 9
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)
    from rich.console import Console

    counter = SkipCounter(Console(stderr=True, width=200))
    n = 0
    for batch in loader:
        counter.add(batch)
        if "image" in batch:
            assert batch["image"].shape[1:] == (3, 16, 16)
            n += len(batch["image"])
    assert n == 7
    assert counter.summary() == "2 unreadable image(s) skipped"
    err = capsys.readouterr().err
    assert "notes.jpg: not an image file" in err and "truncated.png: cannot decode" in err


def test_mode_conversions_are_correct(odd_folder):
    white = np.asarray(load_rgb(odd_folder / "dog" / "rgba.png"))
    assert white.min() == 255  # transparent pixels composited on white
    sixteen = np.asarray(load_rgb(odd_folder / "dog" / "sixteen.png"))
    assert sixteen.min() == 255  # 16-bit full scale -> 8-bit full scale
    gray = np.asarray(load_rgb(odd_folder / "cat" / "gray.png"))
    assert gray.shape == (40, 40, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    cmyk = load_rgb(odd_folder / "cat" / "cmyk.jpg")
    assert cmyk.mode == "RGB"


def test_labels_and_captions(odd_folder):
    ds = build_dataset(f"imagefolder:{odd_folder}", "train")
    ds.val_fraction = 0
    full = build_dataset({"name": "imagefolder", "path": str(odd_folder), "val_fraction": 0.0}, "train")
    i = [p.name for p in full.files].index("ok.png")
    assert full.captions[i] == "a noisy cat" and full.classes[full.labels[i]] == "cat"
    j = [p.name for p in full.files].index("tiny.png")
    assert full.captions[j] == "a photo of a dog"


def test_deterministic_split_and_subfolder_split(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(40):
        _save(Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)), tmp_path / "flat" / f"{i}.png")
    tr = build_dataset({"name": "imagefolder", "path": str(tmp_path / "flat"), "val_fraction": 0.25}, "train")
    va = build_dataset({"name": "imagefolder", "path": str(tmp_path / "flat"), "val_fraction": 0.25}, "val")
    assert len(tr) + len(va) == 40 and 3 <= len(va) <= 20
    assert not set(tr.files) & set(va.files)
    for split in ("train", "val"):
        _save(Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)), tmp_path / "sp" / split / "a" / "x.png")
    assert len(build_dataset(f"imagefolder:{tmp_path / 'sp'}", "val")) == 1


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        build_dataset(f"imagefolder:{tmp_path / 'nope'}", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        build_dataset(f"imagefolder:{tmp_path / 'empty'}", "train")


def test_bad_captions_file(odd_folder):
    (odd_folder / "captions.jsonl").write_text("not json\n")
    with pytest.raises(DataError, match="captions.jsonl:1"):
        build_dataset(f"imagefolder:{odd_folder}", "train")


def _class_folder(root, classes, per_class, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        for i in range(per_class):
            _save(Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)), root / c / f"{c}_{i:04d}.png")


def test_imagefolder_order_samples_every_class_and_numbers_classes_alike_in_both_splits(tmp_path):
    """ImageNet as people lay it out (class folders, sorted names): the first N images
    are a sample of every class, not the first classes; a class numbers the same in
    train/ and val/ even when val holds only some classes."""
    _class_folder(tmp_path / "in" / "train", [f"n{k:08d}" for k in range(10)], 30)
    _class_folder(tmp_path / "in" / "val", ["n00000003", "n00000007"], 5, seed=1)
    train = build_dataset(f"imagefolder:{tmp_path / 'in'}", "train")
    val = build_dataset(f"imagefolder:{tmp_path / 'in'}", "val")
    assert len({train.labels[i] for i in range(30)}) >= 8  # sorted order: the first 30 were all class 0
    assert val.classes == train.classes and set(val.labels) == {3, 7}
    for i in range(len(val)):
        assert val.classes[val.labels[i]] == val.files[i].parent.name
    assert not train.same_for_every_split
    flat = build_dataset(f"imagefolder:{tmp_path / 'in' / 'train'}", "val")
    assert flat.same_for_every_split and len({flat.labels[i] for i in range(30)}) >= 8
    again = build_dataset(f"imagefolder:{tmp_path / 'in' / 'train'}", "val")
    assert again.files == flat.files  # a fixed order
