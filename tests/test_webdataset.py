"""The ``webdataset`` dataset on shards the test writes: layout, splits,
errors, workers, mid-epoch resume, bench, and a 2-process gloo training that
sees every sample once per epoch."""
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, free_port, make_dist
from tokzoo.data import build_dataset, collate
from tokzoo.errors import DataError

RES = 16


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_shards(folder: Path, sizes: list[int], seed: int = 0, prefix: str = "shard",
                 fmt: str = tarfile.PAX_FORMAT) -> list[np.ndarray]:
    """Shards of RES x RES PNGs (+ .cls, + .txt for even samples), ImageNet-like
    keys in class sub-folders; returns the images in sample order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, k = [], 0
    for s, n in enumerate(sizes):
        with tarfile.open(folder / f"{prefix}-{s:06d}.tar", "w", format=fmt) as tar:
            for _ in range(n):
                arr = rng.integers(0, 256, (RES, RES, 3), dtype=np.uint8)
                label = k % 5
                key = f"n0{label:07d}/n0{label:07d}_{k:05d}"
                _member(tar, key + ".png", _png(arr))
                _member(tar, key + ".cls", f"{label}\n".encode())
                if k % 2 == 0:
                    _member(tar, key + ".txt", f"caption {k}".encode())
                images.append(arr)
                k += 1
    return images


def _spec(path, **kw):
    return {"name": "webdataset", "path": str(path), "resolution": RES, **kw}


def test_reads_every_sample_exactly(tmp_path):
    images = write_shards(tmp_path / "train", [5, 3, 4])
    write_shards(tmp_path / "val", [2], seed=1)
    ds = build_dataset(_spec(tmp_path), "train")
    assert len(ds) == 12 and len(build_dataset(_spec(tmp_path), "val")) == 2
    for i in range(12):
        s = ds[i]
        assert s["index"] == i and s["label"] == i % 5
        assert s["caption"] == (f"caption {i}" if i % 2 == 0 else "")
        got = (s["image"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(got, images[i]), i
    # the same shards through a glob and a brace pattern
    assert len(build_dataset(_spec(tmp_path / "train" / "shard-*.tar"), "train")) == 12
    assert len(build_dataset(_spec(tmp_path / "train" / "shard-{000000..000001}.tar"), "train")) == 8
    assert ds.fingerprint() != build_dataset(_spec(tmp_path), "val").fingerprint()


def test_shard_index_is_cached_and_redone_when_a_shard_changes(tmp_path, monkeypatch):
    """The second build reads each shard's index from the cache (no tar walk); a
    rewritten shard, a corrupt cache entry or index_cache=false walk again; an
    unwritable cache folder only costs the walk."""
    import tokzoo.data.webdataset as wds

    monkeypatch.setenv("TOKZOO_CACHE_DIR", str(tmp_path / "cache"))
    walked = []
    real = wds.index_shard
    monkeypatch.setattr(wds, "index_shard", lambda path: walked.append(path.name) or real(path))

    def pixels(ds):
        return [(ds[i]["image"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy() for i in range(len(ds))]

    images = write_shards(tmp_path / "data", [5, 3, 4])
    first = build_dataset(_spec(tmp_path / "data"), "train")
    assert len(walked) == 3 and len(list((tmp_path / "cache" / "webdataset-index").glob("*.json"))) == 3
    walked.clear()
    again = build_dataset(_spec(tmp_path / "data"), "train")
    assert walked == [] and again.samples == first.samples
    assert all(np.array_equal(a, b) for a, b in zip(pixels(again), images))
    assert [again[i]["caption"] for i in range(12)] == [first[i]["caption"] for i in range(12)]

    # shard 1 rewritten with other images (and one more sample): only it is walked again
    other = write_shards(tmp_path / "new", [5, 4, 4], seed=7)
    (tmp_path / "new" / "shard-000001.tar").replace(tmp_path / "data" / "shard-000001.tar")
    changed = build_dataset(_spec(tmp_path / "data"), "train")
    assert walked == ["shard-000001.tar"] and len(changed) == 13
    assert all(np.array_equal(a, b) for a, b in zip(pixels(changed)[5:9], other[5:9]))

    for f in (tmp_path / "cache" / "webdataset-index").glob("*.json"):
        f.write_text('{"version": 1, "shard"')  # cut short
    walked.clear()
    assert build_dataset(_spec(tmp_path / "data"), "train").samples == changed.samples and len(walked) == 3
    walked.clear()
    build_dataset(_spec(tmp_path / "data", index_cache=False), "train")
    assert len(walked) == 3

    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("TOKZOO_CACHE_DIR", str(tmp_path / "not-a-folder"))
    walked.clear()
    assert build_dataset(_spec(tmp_path / "data"), "train").samples == changed.samples and len(walked) == 3


def test_long_names_gnu_and_ustar_and_class_names(tmp_path):
    long = "a" * 150 + "/" + "b" * 120  # needs a PAX or GNU long-name record
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        d = tmp_path / str(fmt)
        d.mkdir()
        with tarfile.open(d / "x.tar", "w", format=fmt) as tar:
            _member(tar, long + ".png", _png(np.full((RES, RES, 3), 7, np.uint8)))
            _member(tar, long + ".cls", b"1")
            _member(tar, "short.seg.png", _png(np.zeros((RES, RES, 3), np.uint8)))  # key 'short', ext 'seg.png'
            _member(tar, "short.jpg", _png(np.zeros((RES, RES, 3), np.uint8)))
        (d / "classes.txt").write_text("tench\ngolden_fish\n")
        ds = build_dataset(_spec(d / "x.tar", classes=str(d / "classes.txt")), "train")
        assert len(ds) == 2 and ds.num_classes == 2
        assert ds[0]["label"] == 1 and ds[0]["caption"] == "a photo of a golden fish"
        assert float(ds[0]["image"].mul(255).round().mean()) == 7.0
        assert ds[1]["label"] == -1  # the .jpg part is the image; seg.png is not


def test_hash_split_and_val_path(tmp_path):
    write_shards(tmp_path / "all", [30, 30])
    train = build_dataset(_spec(tmp_path / "all", val_fraction=0.2), "train")
    val = build_dataset(_spec(tmp_path / "all", val_fraction=0.2), "val")
    keys = lambda d: {d.samples[i][1] for i in range(len(d))}  # noqa: E731
    assert len(build_dataset(_spec(tmp_path / "all"), "val")) == 60  # no val source: all of path
    assert len(train) + len(val) == 60 and not keys(train) & keys(val) and 4 <= len(val) <= 20
    write_shards(tmp_path / "v", [3], seed=2, prefix="val")
    both = _spec(tmp_path / "all", val_path=str(tmp_path / "v"))
    assert len(build_dataset(both, "train")) == 60 and len(build_dataset(both, "val")) == 3


def test_bad_samples_are_skipped_and_counted(tmp_path):
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        _member(tar, "good.png", _png(np.zeros((RES, RES, 3), np.uint8)))
        _member(tar, "broken.jpg", b"not a jpeg")
        _member(tar, "noimage.cls", b"3")
        _member(tar, "badlabel.png", _png(np.zeros((RES, RES, 3), np.uint8)))
        _member(tar, "badlabel.cls", b"three")
    ds = build_dataset(_spec(tmp_path / "s.tar"), "train")
    batch = collate([ds[i] for i in range(len(ds))])
    assert len(batch["image"]) == 1
    assert len(batch["skipped"]) == 3
    assert any("s.tar:broken.jpg" in s for s in batch["skipped"])
    assert any("no image part" in s for s in batch["skipped"])
    assert any("not an integer" in s for s in batch["skipped"])


@pytest.mark.parametrize("spec, msg", [
    ({"path": ""}, "give data.path"),
    ({"path": "{tmp}/nope-{000..002}.tar"}, "nope-000.tar does not exist (3 of 3 missing)"),
    ({"path": "{tmp}/empty"}, "no .tar shards"),
    ({"path": "{tmp}/gz/x.tar"}, "uncompressed tar"),
    ({"path": "{tmp}/empty", "classes": "{tmp}/none.txt"}, "no .tar shards"),
])
def test_clear_errors(tmp_path, spec, msg):
    (tmp_path / "empty").mkdir()
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "x.tar").write_bytes(b"\x1f\x8b" + b"\0" * 600)
    spec = {k: v.replace("{tmp}", str(tmp_path)) for k, v in spec.items()}
    with pytest.raises(DataError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        build_dataset(_spec(**spec) if "path" not in spec else {"name": "webdataset", **spec}, "train")


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 2 workers on a 2-core machine: on purpose
def test_loader_workers_split_batches_without_duplicates(tmp_path):
    from tokzoo.train.trainer import StepBatches

    write_shards(tmp_path / "train", [7, 9, 8])
    write_shards(tmp_path / "val", [2])
    ds = build_dataset(_spec(tmp_path), "train")
    seen = {}
    for rank in range(2):
        sampler = StepBatches(len(ds), 4, seed=3, start_step=0, total_steps=6, rank=rank, world=2)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=2)
        seen[rank] = [b["index"].tolist() for b in loader]
    for epoch in range(2):  # 24 samples, global batch 8: three steps per epoch
        got = [i for r in range(2) for b in seen[r][3 * epoch:3 * epoch + 3] for i in b]
        assert sorted(got) == list(range(24)), epoch


RECORD = '''
import json, os
import torch.distributed as dist
from tokzoo import hookimpl
from tokzoo.train.recipes import ReconstructionRecipe


class Record(ReconstructionRecipe):
    """The reconstruction recipe, writing which samples each rank saw at each step."""
    crash_at = -1

    def generator_step(self, model, tokenizer, batch, ctx):
        if ctx.step == self.crash_at:
            raise RuntimeError("crash for the test")
        rank = dist.get_rank() if dist.is_initialized() else 0
        with open(os.environ["SEEN_LOG"] + f".{rank}", "a") as f:
            f.write(json.dumps({"step": ctx.step, "index": batch["index"].tolist()}) + "\\n")
        return super().generator_step(model, tokenizer, batch, ctx)


@hookimpl
def tokzoo_register_recipes(register):
    register("record", Record, "reconstruction, logging the samples seen")
'''

SMALL = ["model.resolution=16", "data.resolution=16", "model.encoder.ch=8", "model.decoder.ch=8",
         "model.encoder.z_channels=16", "model.decoder.z_channels=16", "model.quantizer.codebook_size=64",
         "trainer.eval_images=8", "trainer.log_every=2"]


def _seen(log: Path, rank: int = 0) -> list[dict]:
    f = Path(f"{log}.{rank}")
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


def test_resume_mid_epoch_sees_the_same_samples(tmp_path, monkeypatch):
    import importlib.util

    from tokzoo.config import load_run_config
    from tokzoo.registry import get_registry
    from tokzoo.train.trainer import Trainer

    spec = importlib.util.spec_from_loader("record_plugin", loader=None)
    mod = importlib.util.module_from_spec(spec)
    exec(RECORD, mod.__dict__)
    get_registry().add_plugin(mod, "record", "tokzoo-record", "0")
    write_shards(tmp_path / "shards" / "train", [10, 10, 12])
    write_shards(tmp_path / "shards" / "val", [8])
    args = SMALL + [f"data={{name: webdataset, path: {tmp_path / 'shards'}}}", "data.resolution=16",
                    "recipe={name: record, steps: 6, perceptual_weight: 0.0}", "trainer.batch_size=8",
                    "trainer.ckpt_every=2", "trainer.num_workers=1"]
    monkeypatch.setenv("SEEN_LOG", str(tmp_path / "full"))
    Trainer(load_run_config("vq-tiny", args + [f"run_dir={tmp_path / 'a'}"])).train()
    monkeypatch.setenv("SEEN_LOG", str(tmp_path / "cut"))
    mod.Record.crash_at = 3
    with pytest.raises(RuntimeError, match="crash for the test"):
        Trainer(load_run_config("vq-tiny", args + [f"run_dir={tmp_path / 'b'}"])).train()
    mod.Record.crash_at = -1
    Trainer(load_run_config("vq-tiny", args + [f"run_dir={tmp_path / 'b'}"])).train(resume=True)
    full, cut = _seen(tmp_path / "full"), _seen(tmp_path / "cut")
    assert [r["step"] for r in cut] == [0, 1, 2, 2, 3, 4, 5]  # resumed from step-2's checkpoint
    assert cut[:3] + cut[4:] == full[:3] + full[3:]
    assert cut[3] == full[2]


@pytest.mark.paper
def test_bench_reads_shards(tmp_path, cli):
    write_shards(tmp_path / "shards" / "train", [16])
    write_shards(tmp_path / "shards" / "val", [5, 5], seed=4)
    run = tmp_path / "runs" / "vq"
    out = cli("train", "vq-tiny", *SMALL, f"data={{name: webdataset, path: {tmp_path / 'shards'}}}",
              "data.resolution=16", "recipe.steps=2", "trainer.batch_size=4", f"run_dir={run}")
    assert out.returncode == 0, out.stderr[-2000:]
    out = cli("bench", "--tokenizers", str(run), "--data", "webdataset", f"data.path={tmp_path / 'shards'}",
              "--num-images", "10", "--metrics", "psnr,ssim", "--out", str(tmp_path / "bench"))
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "bench" / "results.json").read_text())
    entry = next(iter(res["tokenizers"].values()))
    assert entry["num_images"] == 10 and entry["dataset"].startswith("webdataset:") and entry["metrics"]["psnr"] > 0
    out = cli("bench", "--tokenizers", str(run), "--data", "webdataset", f"data.path={tmp_path / 'nothing'}",
              "--out", str(tmp_path / "bench2"))
    assert out.returncode == 2 and "Traceback" not in out.stderr and "nothing" in out.stderr


@pytest.mark.paper
def test_two_process_gloo_training_sees_every_sample_once_per_epoch(tmp_path):
    root = make_dist(tmp_path / "site", "tokzoo-record", "0.1", {"record": "record_plugin"},
                     {"record_plugin.py": RECORD})
    write_shards(tmp_path / "shards" / "train", [20, 20, 16, 8])  # 64 samples in uneven shards
    write_shards(tmp_path / "shards" / "val", [8])
    log = tmp_path / "seen"
    env = dict(os.environ, OMP_NUM_THREADS="1", SEEN_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(root), str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "tokzoo.cli", "train", "vq-tiny", *SMALL,
           f"data={{name: webdataset, path: {tmp_path / 'shards'}}}", "data.resolution=16",
           "recipe={name: record, steps: 8, perceptual_weight: 0.0}", "trainer.batch_size=8",
           "trainer.num_workers=2", f"run_dir={tmp_path / 'run'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    per_rank = [_seen(log, r) for r in range(2)]
    assert [len(p) for p in per_rank] == [8, 8]
    for epoch in range(2):  # global batch 16 over 64 samples: 4 steps per epoch
        got = [i for p in per_rank for r in p if 4 * epoch <= r["step"] < 4 * epoch + 4 for i in r["index"]]
        assert sorted(got) == list(range(64)), epoch
    assert per_rank[0][0]["index"] != per_rank[1][0]["index"]


def test_hostile_shards_labels_attributes_and_encodings(tmp_path):
    """A negative or huge .cls, a .json of attributes (and one that is not JSON), a member name that is
    not UTF-8 with val_fraction, a Latin-1 classes file: skipped with the reason or read, never a crash."""
    with tarfile.open(tmp_path / "s.tar", "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        for key, cls, extra in (("neg", b"-3", None), ("huge", b"99999999999", None), ("ok", b"1", b'{"colour": "red",'
                                 b' "n": 2, "deep": {"x": 1}}'), ("badjson", b"0", b"not json"), ("caf\xe9", b"0", None)):
            name = key if isinstance(key, str) else key.decode("latin-1")
            _member(tar, name + ".png", _png(np.zeros((RES, RES, 3), np.uint8)))
            _member(tar, name + ".cls", cls)
            if extra is not None:
                _member(tar, name + ".json", extra)
    (tmp_path / "classes.txt").write_bytes("chat\ncaf\xe9\n".encode("latin-1"))
    ds = build_dataset(_spec(tmp_path / "s.tar", classes=str(tmp_path / "classes.txt")), "train")
    samples = {ds.samples[i][1]: ds[i] for i in range(len(ds))}
    assert "outside 0..1" in samples["neg"]["skipped"] and "outside 0..1" in samples["huge"]["skipped"]
    assert samples["ok"]["attributes"] == {"class": ds.classes[1], "colour": "red", "n": "2"}
    assert "not a JSON object" in samples["badjson"]["skipped"]
    assert ds.classes[0] == "chat" and ds.classes[1].startswith("caf")
    for split in ("train", "val"):  # a hashed split over a name in another encoding
        build_dataset(_spec(tmp_path / "s.tar", val_fraction=0.5), split)
