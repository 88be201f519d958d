"""The text-preservation probe (text-ocr) with the real PP-OCRv4 recogniser of the
rapidocr-onnxruntime wheel, against known answers: a tokenizer that returns the
image scores the ceiling; one that downsamples by 4 and back loses the small words
while the large ones stay near the ceiling; noise scores zero. And the data it
reads: the `text` dataset (deterministic, word boxes) and a user's folder with
words.json."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import run_tokzoo_here

import os  # noqa: E402

from tokzoo.data.text import find_word_list  # noqa: E402
from tokzoo.errors import DataError  # noqa: E402

try:  # the recogniser (a PyPI wheel) and the word list (Debian's wamerican): CI installs both, and there
    import rapidocr_onnxruntime  # noqa: F401  (TOKZOO_REQUIRE_OCR=1) a missing one fails instead of skipping
    find_word_list("")
except (ImportError, DataError) as exc:
    if os.environ.get("TOKZOO_REQUIRE_OCR"):
        raise
    pytest.skip(f"text-ocr cannot run here: {exc}", allow_module_level=True)


def _batch(n: int, resolution: int = 256, split: str = "val"):
    from tokzoo.data import collate
    from tokzoo.data.preprocess import to_uint8
    from tokzoo.data.text import TextDataset

    ds = TextDataset(split=split, resolution=resolution, val_size=n)
    batch = collate([ds[i] for i in range(n)])
    return to_uint8(batch["image"]), batch


@pytest.fixture(scope="module")
def measured():
    """The metric through its contract calls on 24 images at 256 px, for three reconstructions."""
    from tokzoo.api import BenchContext
    from tokzoo.bench.text import TextOCR

    o8, batch = _batch(24)
    down = F.interpolate(F.interpolate(o8.float(), scale_factor=0.25, mode="area"), size=o8.shape[-2:],
                         mode="bilinear", align_corners=False).round().clamp(0, 255).to(torch.uint8)
    noise = torch.randint(0, 256, o8.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = {}
    metric = TextOCR(resamples=200)
    metric.setup(BenchContext(device=torch.device("cpu")))
    for name, rec in (("identity", o8), ("down4", down), ("noise", noise)):
        metric.reset(None)
        metric.update(o8, rec, None, batch)
        result = metric.compute()
        out[name] = (result, result.intervals, result.not_measured)
    return out, metric


@pytest.mark.paper  # the real recogniser on 24 pages: CI's test-paper
def test_identity_scores_the_ceiling_in_every_bucket(measured):
    out, metric = measured
    values, intervals, missing = out["identity"]
    assert not missing  # every bucket has words at 256 px
    for key in metric._keys(ceiling=False):
        assert values[key] == values[key + "_ceiling"]
    # the recogniser is real: it reads most words of the originals, large ones best
    assert values["text_acc_ceiling"] > 0.6 and values["text_acc_large_ceiling"] >= values["text_acc_small_ceiling"]
    assert intervals["text_acc"][0] <= values["text_acc"] <= intervals["text_acc"][1]


@pytest.mark.paper  # the real recogniser on 24 pages: CI's test-paper
def test_a_blur_by_four_loses_the_small_words_and_keeps_the_large(measured):
    out, _ = measured
    v = out["down4"][0]
    # measured: small 0 and medium 0 of ceilings 0.78 and 0.96, large 0.58 of 1.0 (24 images): the large
    # bucket's words, 0.04 to 0.25 of the image, are read again from about 0.1 up (8 px after the blur)
    assert v["text_acc_small"] <= 0.25 * v["text_acc_small_ceiling"]
    assert v["text_acc_large"] >= 0.4 * v["text_acc_large_ceiling"]
    assert v["text_acc_large"] > v["text_acc_small"] + 0.3


@pytest.mark.paper  # the real recogniser on 24 pages: CI's test-paper
def test_noise_scores_zero(measured):
    out, _ = measured
    v = out["noise"][0]
    assert v["text_acc"] == 0 and v["text_ned"] < 0.2  # the engine's floor: letters it guesses in noise


@pytest.mark.paper  # the real recogniser on 24 pages: CI's test-paper
def test_the_engine_is_identified_in_the_protocol(measured):
    _, metric = measured
    ((name, sha),) = metric.weights.items()
    assert name.endswith("ch_PP-OCRv4_rec_infer.onnx") and len(sha) == 64
    assert "PP-OCRv4" in metric.protocol()["engine"]


def test_the_text_data_is_deterministic_and_its_splits_share_no_word():
    from tokzoo.data.text import TextDataset

    a, b = TextDataset("val", 128, val_size=8), TextDataset("val", 128, val_size=8)
    for i in range(8):
        sa, sb = a[i], b[i]
        assert torch.equal(sa["image"], sb["image"]) and sa["words"] == sb["words"]
        for w in sa["words"]:
            x0, y0, x1, y1 = w["box"]
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
    assert not set(TextDataset("train", 64).words) & set(a.words)
    small = TextDataset("val", 32, val_size=16)  # at 32 px: large words only
    assert all((w["box"][3] - w["box"][1]) / 32 >= 0.04 for i in range(16) for w in small[i]["words"])


@pytest.mark.paper
def test_a_users_folder_of_text_images_with_word_boxes(tmp_path, cli):
    """An IC13-style folder: images of another size and shape, words.json with boxes or polygons;
    the boxes move with the protocol's centre crop, a word the crop cuts is left out."""
    from PIL import Image, ImageDraw, ImageFont

    from tokzoo.data.text import TextFolderDataset, find_fonts

    font = ImageFont.truetype(next(iter(find_fonts().values()))[0], 40)
    root = tmp_path / "mytext"
    root.mkdir()
    table = {}
    for k, word in enumerate(["harbor", "quickly", "semantic"]):
        img = Image.new("RGB", (600, 400), (235, 230, 220))
        d = ImageDraw.Draw(img)
        d.text((150, 180), word, font=font, fill=(20, 20, 40))
        d.text((5, 5), "cut", font=font, fill=(20, 20, 40))  # outside the centre square: left out
        box = list(d.textbbox((150, 180), word, font=font))
        img.save(root / f"page{k}.png")
        cut = list(d.textbbox((5, 5), "cut", font=font))
        table[f"page{k}.png"] = [{"text": word, "box": box},
                                 {"text": "cut", "points": [cut[0], cut[1], cut[2], cut[1], cut[2], cut[3], cut[0], cut[3]]}]
    (root / "words.json").write_text(json.dumps(table))
    ds = TextFolderDataset("val", str(root), resolution=256)
    s = ds[0]
    assert [w["text"] for w in s["words"]] == [table[ds.inner.files[0].name][0]["text"]]
    x0, y0, x1, y1 = s["words"][0]["box"]
    scale, left = 256 / 400, (round(600 * 256 / 400) - 256) // 2
    assert (x0, y0) == (round(table[ds.inner.files[0].name][0]["box"][0] * scale) - left,
                        round(table[ds.inner.files[0].name][0]["box"][1] * scale))
    # the probe on it, from the command line: the same words read from the crop as in the original
    from tokzoo.api import BenchContext
    from tokzoo.bench.text import TextOCR
    from tokzoo.data import collate
    from tokzoo.data.preprocess import to_uint8

    batch = collate([ds[i] for i in range(len(ds))])
    metric = TextOCR(resamples=50)
    metric.setup(BenchContext(device=torch.device("cpu")))
    metric.reset(None)
    o8 = to_uint8(batch["image"])
    metric.update(o8, o8, None, batch)
    assert metric.compute()["text_acc_ceiling"] == 1.0
    # the command a user types, on a trained tokenizer (vq-tiny: 32 px, so the words are a few pixels)
    train = cli("train", "vq-tiny", "recipe.steps=2", "data.train_size=16", "data.val_size=8",
                "trainer.eval_images=8", f"run_dir={tmp_path / 'vq'}")
    assert train.returncode == 0, train.stderr[-1500:]
    out = cli("bench", "--tokenizers", str(tmp_path / "vq"), "--data", f"textfolder:{root}", "--metrics",
              "psnr,text-ocr", "--num-images", "3", "--out", str(tmp_path / "b"))
    assert out.returncode == 0, out.stderr[-1500:]
    (entry,) = json.loads((tmp_path / "b" / "results.json").read_text())["tokenizers"].values()
    assert {"text_acc", "text_acc_ceiling", "psnr"} <= set(entry["metrics"])
    (root / "words.json").write_text(json.dumps({"page0.png": [{"text": "x", "box": [5, 5, 1, 1]}]}))
    with pytest.raises(DataError, match="is not x0 < x1"):
        TextFolderDataset("val", str(root), resolution=256)[0]


def test_text_ocr_without_word_boxes_says_what_data_it_needs(tmp_path):
    from tokzoo.bench.text import TextOCR

    metric = TextOCR()
    metric.reset(None)
    with pytest.raises(ValueError, match="--data text, or textfolder:PATH"):
        metric.update(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8), None,
                      {"image": torch.zeros(1, 3, 8, 8)})
    with pytest.raises(Exception, match="engine must be one of ppocr, tesseract"):
        TextOCR(engine="easyocr")


def test_the_text_row_of_the_tradeoff_picture():
    """A bench with text-ocr and no probe still draws its trade-off: T-ACC against PSNR."""
    from conftest import REPO
    from tokzoo.bench.plots import tradeoff_png, tradeoff_points

    results = json.loads((REPO / "benchmarks" / "results" / "reproduce" / "text" / "results.json").read_text())
    pts = tradeoff_points(results)
    assert sorted(p["name"] for p in pts) == ["semhitok-tiny", "vilau-tiny", "vqgan-tiny"]
    assert all(p["text"] == 0 for p in pts)
    png = tradeoff_png(results)
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
