"""The benchmark harness and compare: correctness against reference implementations,
outputs, missing weights, interruption, torchrun equality, regression tables."""
import csv
import io
import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tokzoo.bench.metrics import PSNR, SSIM, frechet_distance, ssim_per_image
from tokzoo.measures import linear_probe
from conftest import free_port, name_of
from tokzoo.config import load_run_config
from tokzoo.errors import DataError
from tokzoo.testing import make_alexnet_weights, make_inception_weights
from tokzoo.train.trainer import Trainer

TINY = ["model.resolution=32", "data.resolution=32", "data.train_size=128", "data.val_size=32",
        "model.encoder.ch=8", "model.decoder.ch=8", "model.encoder.z_channels=16", "model.decoder.z_channels=16",
        "model.quantizer.codebook_size=64", "trainer.batch_size=8", "trainer.eval_images=16"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    make_alexnet_weights(d)
    make_inception_weights(d)
    return d


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two tiny tokenizers trained for a few steps (different codebook sizes)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, extra in (("a", []), ("b", ["model.quantizer.codebook_size=16"])):
        cfg = load_run_config("vq-tiny", TINY + extra + ["recipe.steps=3", f"run_dir={root / name}"])
        Trainer(cfg).train()
        out[name] = root / name
    return out


def _images(n, seed=0, size=32):
    g = np.random.default_rng(seed)
    a = g.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    b = np.clip(a.astype(int) + g.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    return torch.from_numpy(a), torch.from_numpy(b)


def test_psnr_and_ssim_equal_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = _images(4)
    m = PSNR()
    m.reset()
    m.update(a[:2], b[:2])
    m.update(a[2:], b[2:])
    ref = np.mean([peak_signal_noise_ratio(a[i].numpy(), b[i].numpy(), data_range=255) for i in range(4)])
    assert m.compute()["psnr"] == pytest.approx(ref, rel=1e-12)
    ours = ssim_per_image(a, b)
    for i in range(4):
        sk = structural_similarity(a[i].permute(1, 2, 0).numpy(), b[i].permute(1, 2, 0).numpy(), channel_axis=-1,
                                   gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
        assert float(ours[i]) == pytest.approx(sk, rel=1e-9)
    s = SSIM()
    s.reset()
    s.update(a, b)
    assert s.compute()["ssim"] == pytest.approx(float(ours.mean()))


def test_frechet_distance_against_eigenvalue_reference():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 6)), rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6)) + 1
    mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    # Tr(sqrt(S1 S2)) = sum of square roots of the eigenvalues of S1 S2
    tr = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(min=0)).sum()
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-6)


def test_frechet_distance_equals_scipys_sqrtm_on_tensors_too_and_when_singular():
    """#34: the distance in float64 torch (on the statistics' device), no sqrtm: scipy's value."""
    import warnings

    import scipy.linalg

    rng = np.random.default_rng(1)
    for n, d in ((40, 64), (400, 64)):  # fewer images than dimensions (singular), and more
        x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d)) * 1.3 + 0.2
        mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            covmean = scipy.linalg.sqrtm(s1 @ s2).real
        ref = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6), n
        as_tensors = [torch.from_numpy(v) for v in (mu1, s1, mu2, s2)]
        assert frechet_distance(*as_tensors) == frechet_distance(mu1, s1, mu2, s2)


@pytest.mark.paper  # 35 s: with the paper group (CI runs it), keeping make test under 10 minutes
def test_rfid_equals_torch_fidelity(weights):
    import torch_fidelity

    from tokzoo.api import BenchContext
    from tokzoo.bench.metrics import RFID

    a, b = _images(40, seed=3)
    m = RFID()
    m.setup(BenchContext(weights_dir=weights))
    m.reset()
    for i in range(0, 40, 16):
        m.update(a[i:i + 16], b[i:i + 16])
    ours = m.compute()["rfid"]

    class DS(torch.utils.data.Dataset):
        def __init__(self, t):
            self.t = t

        def __len__(self):
            return len(self.t)

        def __getitem__(self, i):
            return self.t[i]

    ref = torch_fidelity.calculate_metrics(input1=DS(b), input2=DS(a), fid=True, cuda=False, verbose=False,
                                           cache=False, batch_size=16,
                                           feature_extractor_weights_path=str(weights / "weights-inception-2015-12-05-6726825d.pth"))
    assert ours == pytest.approx(ref["frechet_inception_distance"], rel=1e-4)
    assert ours > 0


def test_linear_probe_separable_and_shuffled():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=g) * 4
    y = torch.arange(500) % 5
    x = centers[y] + torch.randn(500, 16, generator=g) * 0.5
    assert linear_probe(x[:400], y[:400], x[400:], y[400:]) >= 0.99
    shuffled = y[torch.randperm(500, generator=g)]
    noise = torch.randn(500, 16, generator=g)
    acc = linear_probe(noise[:400], shuffled[:400], noise[400:], shuffled[400:])
    assert acc < 0.35  # chance is 0.2


def test_bench_writes_results_and_compare_flags_regressions(trained, weights, tmp_path, cli):
    out = tmp_path / "bench"
    args = ["bench", "--tokenizers", f"{trained['a']},{trained['b']}", "--num-images", "16", "--batch-size", "8",
            "--probe-train-images", "64", "--out", str(out), "--weights-dir", str(weights)]
    run = cli(*args)
    assert run.returncode == 0, run.stderr
    for f in ("results.json", "results.md", "results.csv", "recon_grid.png", "tradeoff.png", "report.html"):
        assert (out / f).is_file(), f
    res = json.loads((out / "results.json").read_text())
    a = res["tokenizers"][name_of(trained["a"])]
    for key in ("psnr", "ssim", "lpips", "rfid", "usage/code", "perplexity/code", "probe_top1", "encode_img_s",
                "decode_img_s", "tokens_per_image", "bits_per_image"):
        assert key in a["metrics"], key
    assert a["metrics"]["tokens_per_image"] == 64 and a["unavailable"] == {}
    # 16 images < 2048 feature dimensions: the rFID is flagged wherever it is shown
    assert a["flags"]["rfid"].startswith("rank-deficient: N = 16 < 2048")
    md = (out / "results.md").read_text()
    assert "rank-deficient: N = 16 < 2048" in md and " †" in md
    assert "rank-deficient" in " ".join(run.stdout.split()) and "LinAlgWarning" not in run.stderr
    assert "rfid: rank-deficient" in (out / "results.csv").read_text()
    p = res["protocol"]
    assert p["preprocessing"] == {"name": "adm-center-crop", "version": 1} and p["num_images"] == 16
    assert len(p["extractors"]["inception-2015-12-05"]) == 64 and "lpips-alex" in p["extractors"]
    assert p["packages"]["torch"] and "git_revision" in p
    assert a["identity"]["checkpoint_sha256"] and a["identity"]["config_sha256"]
    assert "rFID" in (out / "results.md").read_text()
    # every mean over images carries its bootstrap 95 % interval: in results.json, as ± in results.md, in the csv
    # and every other number with one: codebook usage / perplexity and rFID by resampling the images
    assert set(a["intervals"]) == {"psnr", "ssim", "lpips", "probe_top1", "usage/code", "perplexity/code", "rfid"}
    for key, (lo, hi) in a["intervals"].items():
        assert lo <= a["metrics"][key] <= hi and hi > lo, key
    assert p["metrics"]["codebook"]["interval"]["method"] == "normal"
    assert p["metrics"]["rfid"]["interval"]["resamples"] == 100
    assert a["asked"] == ["psnr", "ssim", "lpips", "rfid", "codebook", "probe", "throughput"]
    assert a["sources"]["usage/code"] == "codebook" and a["sources"]["rfid"] == "rfid"
    assert p["intervals"]["resamples"] == 1000 and p["probe"]["version"] == 2
    assert a["token_features"] == "codebook embeddings (quantizer.lookup)"
    half = (a["intervals"]["psnr"][1] - a["intervals"]["psnr"][0]) / 2
    assert f"{a['metrics']['psnr']:.4g} ± {half:.2g}" in md
    assert "psnr_lo95" in (out / "results.csv").read_text().splitlines()[0]

    # re-run: finished tokenizers are reused, numbers unchanged
    again = cli(*args)
    assert again.returncode == 0 and again.stdout.count("reusing finished results") == 2
    assert json.loads((out / "results.json").read_text())["tokenizers"] == res["tokenizers"]

    # compare: identical passes; a planted regression fails; a protocol change is refused
    ok = cli("compare", str(out / "results.json"), "--baseline", str(out / "results.json"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS" in ok.stdout
    worse = json.loads(json.dumps(res))
    worse["tokenizers"][name_of(trained["a"])]["metrics"]["psnr"] -= 5.0  # far outside its noise band
    b_rfid = res["tokenizers"][name_of(trained["b"])]
    worse["tokenizers"][name_of(trained["b"])]["metrics"]["rfid"] += 3 * (b_rfid["intervals"]["rfid"][1] - b_rfid["metrics"]["rfid"])
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    summary = tmp_path / "summary.md"
    bad = cli("compare", str(tmp_path / "worse.json"), "--baseline", str(out / "results.json"),
              "--markdown", str(summary))
    assert bad.returncode == 1
    text = summary.read_text()
    assert text.count("REGRESSION") == 2 and "FAIL, 2 regression(s)" in text
    assert re.search(r"\| psnr ↑ \|[^\n]*\| noise ±[0-9.]+ \| ❌ REGRESSION", text)  # the rule used, per row
    assert re.search(r"\| rfid ↓ \|[^\n]*\| noise ±[0-9.e+]+ \| ❌ REGRESSION", text), text  # its bootstrap band
    loose = cli("compare", str(tmp_path / "worse.json"), "--baseline", str(out / "results.json"),
                "--tolerance", f"psnr=6,rfid={4 * (b_rfid['intervals']['rfid'][1] - b_rfid['metrics']['rfid'])}")
    assert loose.returncode == 0
    other = json.loads(json.dumps(res))
    other["protocol"]["num_images"] = 50000
    (tmp_path / "other.json").write_text(json.dumps(other))
    refused = cli("compare", str(tmp_path / "other.json"), "--baseline", str(out / "results.json"))
    assert refused.returncode == 2 and "differ in 'num_images'" in refused.stderr


def test_missing_weights_mark_metrics_unavailable_and_the_rest_runs(trained, tmp_path, cli):
    empty = tmp_path / "noweights"
    empty.mkdir()
    out = tmp_path / "bench"
    run = cli("bench", "--tokenizers", str(trained["a"]), "--num-images", "8", "--metrics", "psnr,lpips,rfid",
              "--out", str(out), env={"TOKZOO_WEIGHTS_DIR": str(empty), "TORCH_HOME": str(empty / "torch")})
    assert run.returncode == 0, run.stderr
    res = json.loads((out / "results.json").read_text())["tokenizers"][name_of(trained["a"])]
    assert "psnr" in res["metrics"] and "rfid" not in res["metrics"] and "lpips" not in res["metrics"]
    assert "weights-inception-2015-12-05-6726825d.pth" in res["unavailable"]["rfid"]
    assert "alexnet-owt-7be5be79.pth" in res["unavailable"]["lpips"]
    said = " ".join(run.stdout.split())  # once per reason, after the table, naming the tokenizers
    assert said.count("lpips unavailable (") == 1 and said.count("rfid unavailable (") == 1
    assert said.index("tokzoo bench") < said.index("lpips unavailable (")


def test_bench_bad_input(cli, tmp_path):
    out = cli("bench", "--tokenizers", "vq-tiyn")
    assert out.returncode == 2 and "Did you mean 'vq-tiny'" in out.stderr and "Traceback" not in out.stderr
    out = cli("bench", "--tokenizers", "vq-tiny", "--metrics", "psnr,fid")
    assert out.returncode == 2 and "unknown metric 'fid'" in out.stderr
    out = cli("bench", "--tokenizers", "vq-tiny", "--out", str(tmp_path / "x"), env={"TOKZOO_CONFIG_PATH": ""},
              cwd=str(tmp_path))
    assert out.returncode == 2 and "train it first with `tokzoo train vq-tiny`" in out.stderr
    out = cli("compare", str(tmp_path / "nope.json"), "--baseline", str(tmp_path / "nope.json"))
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_two_process_bench_equals_one_process(trained, tmp_path):
    common = ["-m", "tokzoo.cli", "bench", "--tokenizers", str(trained["a"]), "--num-images", "24",
              "--batch-size", "4", "--probe-train-images", "64",
              "--metrics", "psnr,ssim,codebook,probe,ar-probe,vqa-probe", *AR, *VQA]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}",
                          *common, "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())["tokenizers"][name_of(trained["a"])]["metrics"]
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())["tokenizers"][name_of(trained["a"])]["metrics"]
    for k in ("psnr", "ssim", "usage/code", "perplexity/code"):
        assert r2[k] == pytest.approx(r1[k], rel=1e-9), k
    assert abs(r2["probe_top1"] - r1["probe_top1"]) <= 1 / 24 + 1e-9
    # the AR probe: one GPT trained on the same train codes in every process, its samples the same
    for k in ("ar_nll_bits", "gen_class_acc", "judge_top1", "gfd_judge"):
        assert r2[k] == pytest.approx(r1[k], rel=1e-6, abs=1e-9), k
    # the VQA probe: one model trained on the same train codes in every process, every image answered
    vqa = [k for k in r1 if k.startswith("vqa_")]
    assert "vqa_top1" in vqa and "vqa_colour" in vqa and len(vqa) == 13
    for k in vqa:
        assert r2[k] == pytest.approx(r1[k], rel=1e-9, abs=1e-12), k
    i1 = json.loads((tmp_path / "one" / "results.json").read_text())["tokenizers"][name_of(trained["a"])]["intervals"]
    i2 = json.loads((tmp_path / "two" / "results.json").read_text())["tokenizers"][name_of(trained["a"])]["intervals"]
    for k in ("psnr", "ssim"):  # every process's per-image values reach the bootstrap
        assert i2[k] == pytest.approx(i1[k], rel=1e-9), k


def test_codebook_usage_counts_hierarchical_children_over_the_whole_table():
    from tokzoo.api import Codes, CodeSpec, TokenizerInfo
    from tokzoo.bench.metrics import CodebookUsage

    class Tok:
        info = TokenizerInfo(8, CodeSpec("hierarchical", {"semantic": 4, "pixel": 2}, (1, 2)))

    m = CodebookUsage()
    m.reset(Tok())
    codes = Codes({"semantic": torch.tensor([[[0, 3]]]), "pixel": torch.tensor([[[1, 1]]])}, {"semantic": 4, "pixel": 2},
                  "hierarchical")
    m.update(None, None, codes)
    out = m.compute()
    assert out["usage/semantic"] == 0.5 and out["usage/pixel"] == 2 / 8
    assert out["perplexity/pixel"] == pytest.approx(2.0)


def test_results_record_provenance_and_a_rebench_redoes_what_changed(tmp_path, capsys):
    from test_hooks import Palette, _plugin

    from tokzoo.bench.harness import Bench, BenchOptions
    from tokzoo.testing import make_alexnet_weights, registered_plugin

    def tokzoo_register_tokenizers(register):
        register("palette-test", Palette, "mean colours")

    preset = tmp_path / "palette-32.yaml"
    preset.write_text("model: {name: palette-test, resolution: 32}\n")
    out = tmp_path / "bench"
    with registered_plugin(_plugin(tokzoo_register_tokenizers=tokzoo_register_tokenizers), "pal",
                           distribution="tokzoo-palette", version="1.2.3"):
        def bench(**kw):
            opts = BenchOptions(tokenizers=[str(preset)], metrics=["psnr", "lpips"], num_images=4, device="cpu",
                                out_dir=str(out), **kw)
            return Bench(opts).run()

        first = bench()
        entry = first["tokenizers"][name_of(preset)]
        assert "lpips" in entry["unavailable"] and first["protocol"]["plugins"]["tokzoo-palette"] == "1.2.3"
        assert entry["identity"]["components"]["(tokenizer)"]["distribution"] == "tokzoo-palette"
        capsys.readouterr()
        bench()  # nothing changed: reused
        assert "reusing finished results" in capsys.readouterr().out
        weights = make_alexnet_weights(tmp_path / "w")
        again = bench(weights_dir=str(weights.parent))  # the weights are there now: measured, not reused
        assert "reusing" not in capsys.readouterr().out
        assert "lpips" in again["tokenizers"][name_of(preset)]["metrics"]
        bench(weights_dir=str(weights.parent), data_params={"captions": "shape"})
        assert "reusing" not in capsys.readouterr().out


def test_terminal_table_fits_80_columns():
    """The end of `make demo` in an 80-column terminal: no crushed '…' cells; what
    does not fit is named under the table."""
    from rich.console import Console

    from tokzoo.bench.render import render_table

    from conftest import REPO as repo
    results = json.loads((repo / "benchmarks" / "results" / "zoo" / "results.json").read_text())
    for width in (80, 100):
        console = Console(width=width, record=True, force_terminal=False)
        console.print(render_table(results, width=width))
        text = console.export_text()
        assert all(len(line) <= width for line in text.splitlines())
        assert "…" not in text and "PSNR" in text and "semhitok-tiny" in text
        assert "not shown at this width" in " ".join(text.split())
    wide = Console(width=400, record=True)
    wide.print(render_table(results, width=400))
    text = wide.export_text()
    assert "not shown" not in text and "perplexity" in text


def test_two_runs_checkpoints_of_one_name_are_told_apart_in_every_output():
    """`tokzoo bench --tokenizers runs/a/checkpoints/stage1-final,runs/b/checkpoints/stage1-final`:
    the table, the report, the trade-off points and the unavailable lines name each run."""
    from rich.console import Console

    from tokzoo.bench.render import render_table, short_names, unavailable_by_reason
    from tokzoo.bench.plots import tradeoff_points
    from tokzoo.bench.report import render_html

    from conftest import REPO as repo
    zoo = json.loads((repo / "benchmarks" / "results" / "zoo" / "results.json").read_text())
    (one, *_), entries = zoo["tokenizers"], list(zoo["tokenizers"].values())
    a, b = "runs/a/checkpoints/stage1-final", "runs/b/checkpoints/stage1-final"
    results = {**zoo, "tokenizers": {a: {**entries[0], "unavailable": {"lpips": "no weights"}},
                                     b: {**entries[1], "unavailable": {"lpips": "no weights"}}, one: entries[2]}}
    assert short_names(results["tokenizers"]) == {a: "a/stage1-final", b: "b/stage1-final", one: one}
    assert short_names(["runs/x/checkpoints/final", "x/checkpoints/final"]) == {
        "runs/x/checkpoints/final": "runs/x/final", "x/checkpoints/final": "x/final"}
    assert short_names(["vq-tiny", "runs/vq-tiny"]) == {"vq-tiny": "vq-tiny", "runs/vq-tiny": "runs/vq-tiny"}
    from tokzoo.bench.results import by_display_name

    by_display_name(results)  # what a bench (or a results.json read back) keys them by: their names
    assert set(results["tokenizers"]) == {"a/stage1-final", "b/stage1-final", one}
    console = Console(width=200, record=True)
    console.print(render_table(results, width=200))
    text = console.export_text()
    assert "a/stage1-final" in text and "b/stage1-final" in text
    assert {p["name"] for p in tradeoff_points(results)} >= {"a/stage1-final", "b/stage1-final"}
    assert unavailable_by_reason(results)[("lpips", "no weights")] == ["a/stage1-final", "b/stage1-final"]
    page = render_html(results)
    assert "<td>a/stage1-final</td>" in page and "<td>b/stage1-final</td>" in page


def _class_folder_32(root: Path, classes=("cat", "dog", "owl"), per_class: int = 12) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_the_probe_trains_on_images_after_the_measured_ones(tmp_path):
    """A class folder without train/ and val/ (`--data imagefolder:/data/imagenet/val`):
    the probe's train images are the ones after the measured ones; none left is an
    error the probe reports as its unavailable reason."""
    from tokzoo.bench.measure import probe_train_split
    from tokzoo.data import build_dataset

    _class_folder_32(tmp_path / "val")
    spec = {"name": "imagefolder", "path": str(tmp_path / "val"), "resolution": 32}
    measured = build_dataset(spec, "val").files[:24]
    rest = probe_train_split(spec, 24, "imagefolder")
    assert len(rest) == 12 and not {rest.data.files[rest.skip + i] for i in range(12)} & set(measured)
    assert [rest[i]["index"] for i in range(3)] == [24, 25, 26]
    with pytest.raises(ValueError, match="no held-out split and all its 36 images are measured"):
        probe_train_split(spec, 36, "imagefolder")
    split = tmp_path / "split"
    _class_folder_32(split / "train")
    _class_folder_32(split / "val")
    assert len(probe_train_split({**spec, "path": str(split)}, 36, "imagefolder")) == 36  # a real train split


@pytest.mark.paper
def test_probe_never_trains_on_the_images_it_scores(trained, tmp_path, cli):
    """The same through `tokzoo bench`: the probe runs on the held-out images, flagged
    when fewer than asked, and is unavailable (with the reason) when all are measured."""
    _class_folder_32(tmp_path / "val")
    common = ["--tokenizers", str(trained["a"]), "--data", f"imagefolder:{tmp_path / 'val'}", "--metrics", "psnr,probe",
              "--probe-train-images", "64", "--batch-size", "8"]
    run = cli("bench", *common, "--num-images", "24", "--out", str(tmp_path / "b1"))
    assert run.returncode == 0, run.stderr
    (entry,) = json.loads((tmp_path / "b1" / "results.json").read_text())["tokenizers"].values()
    assert "probe_top1" in entry["metrics"]
    assert "trained on 12 images (all there were), fewer than --probe-train-images 64" in entry["flags"][
        "probe_top1"]
    assert "fewer than --probe-train-images 64" in (tmp_path / "b1" / "results.md").read_text()
    run = cli("bench", *common, "--num-images", "all", "--out", str(tmp_path / "b2"))
    assert run.returncode == 0, run.stderr
    (entry,) = json.loads((tmp_path / "b2" / "results.json").read_text())["tokenizers"].values()
    assert "probe_top1" not in entry["metrics"] and "no held-out split" in entry["unavailable"]["probe"]
    assert "no held-out split" in " ".join(run.stdout.split())


def test_imagenet_kaggle_layout_flat_val_with_a_labels_file(trained, tmp_path):
    """train/WNID/*.JPEG, a flat val/ and LOC_val_solution.csv (header, 'id,WNID x y w h ...'):
    val images get train's numbering from the file; bad files are clear errors; bench probes."""
    from PIL import Image

    from tokzoo.data import build_dataset

    rng = np.random.default_rng(0)
    wnids = [f"n{k:08d}" for k in range(3)]
    for w in wnids:
        (tmp_path / "in" / "train" / w).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / "in" / "train" / w / f"{w}_{i}.JPEG", format="JPEG")
    (tmp_path / "in" / "val").mkdir()
    rows = ["ImageId,PredictionString"]
    for j in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            tmp_path / "in" / "val" / f"ILSVRC2012_val_{j:08d}.JPEG", format="JPEG")
        rows.append(f"ILSVRC2012_val_{j:08d},{wnids[j % 3]} 1 2 30 31 {wnids[j % 3]} 4 5 20 21")
    (tmp_path / "in" / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    spec = {"name": "imagefolder", "path": str(tmp_path / "in"), "labels": "LOC_val_solution.csv"}
    train, val = build_dataset(spec, "train"), build_dataset(spec, "val")
    assert train.classes == val.classes == tuple(wnids)
    assert [val.classes[val.labels[i]] for i in range(12)] == [wnids[int(f.stem[-8:]) % 3] for f in val.files]
    assert build_dataset({**spec, "labels": ""}, "val").labels == [-1] * 12  # without the file: no labels

    for text, msg in (("", "names one of the 12 images"), ("a.png,n1\nbroken-line\n", ":2: each line must be"),
                      ("x.png n1\n", "first line names 'x.png'")):
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(DataError, match=msg):
            build_dataset({**spec, "labels": str(tmp_path / "bad.csv")}, "val")
    with pytest.raises(DataError, match="labels file .*nope.csv does not exist"):
        build_dataset({**spec, "labels": "nope.csv"}, "val")
    # a byte-order mark and CRLF: the header is still a header, no class 'PredictionString'
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    assert build_dataset({**spec, "labels": str(bom)}, "val").classes == tuple(wnids)
    # the file labels the flat images only: a train image it also names keeps its folder's class
    clash = tmp_path / "clash.csv"
    clash.write_text("\n".join(rows + [f"{wnids[0]}_3,{wnids[2]}"]) + "\n")
    t = build_dataset({**spec, "labels": str(clash)}, "train")
    assert all(t.classes[t.labels[i]] == f.parent.name for i, f in enumerate(t.files))
    # a class no folder has is refused, never a class of its own
    (tmp_path / "phantom.csv").write_text("\n".join(rows + ["ILSVRC2012_val_00000000,zzz"]) + "\n")
    with pytest.raises(DataError, match=r"names 1 class.*no class folder has \('zzz'\)"):
        build_dataset({**spec, "labels": str(tmp_path / "phantom.csv")}, "val")

    from tokzoo.bench.harness import Bench, BenchOptions

    opts = BenchOptions(tokenizers=[str(trained["a"])], data=f"imagefolder:{tmp_path / 'in'}",
                        data_params={"labels": "LOC_val_solution.csv"}, num_images=12, metrics=["probe"],
                        probe_train_images=30, batch_size=6, out_dir=str(tmp_path / "b"))
    (entry,) = Bench(opts).run()["tokenizers"].values()
    assert "probe_top1" in entry["metrics"] and not entry.get("flags")


def test_one_bench_builds_each_split_once(trained, tmp_path, monkeypatch):
    """Two tokenizers at one resolution share the val split and the probe's train
    split (listing ImageNet's train/ is about a minute each time)."""
    import tokzoo.bench.harness as harness
    from tokzoo.bench.harness import Bench, BenchOptions

    built = []
    real = harness.build_dataset
    monkeypatch.setattr(harness, "build_dataset", lambda spec, split: built.append(split) or real(spec, split))
    opts = BenchOptions(tokenizers=[str(trained["a"]), str(trained["b"])], num_images=8, metrics=["psnr", "probe"],
                        probe_train_images=16, batch_size=8, out_dir=str(tmp_path / "b"))
    results = Bench(opts).run()
    assert all("probe_top1" in e["metrics"] for e in results["tokenizers"].values())
    assert sorted(built) == ["train", "val"]


def test_bench_takes_its_protocol_from_a_file(trained, tmp_path, cli):
    """`--config FILE`: the file's protocol is what is measured; a flag given overrides it."""
    f = tmp_path / "protocol.yaml"
    f.write_text(f"tokenizers: [{trained['a']}]\nmetrics: [psnr, codebook]\nnum_images: 16\nbatch_size: 8\n"
                 f"out_dir: {tmp_path / 'from-file'}\n")
    run = cli("bench", "--config", str(f), "--num-images", "8")
    assert run.returncode == 0, run.stderr
    res = json.loads((tmp_path / "from-file" / "results.json").read_text())
    assert res["protocol"]["num_images"] == 8  # the flag, over the file's 16
    assert set(res["tokenizers"][name_of(trained["a"])]["metrics"]) == {"psnr", "usage/code", "perplexity/code"}


AR = ["metrics.ar-probe.size=micro", "metrics.ar-probe.steps=8", "metrics.ar-probe.judge_steps=8",
      "metrics.ar-probe.train_images=48", "metrics.ar-probe.batch_size=8"]
VQA = ["metrics.vqa-probe.size=micro", "metrics.vqa-probe.steps=8", "metrics.vqa-probe.train_images=48",
       "metrics.vqa-probe.batch_size=8"]


def test_the_ar_probe_through_the_bench_in_every_output(trained, weights, tmp_path, cli):
    out = tmp_path / "bench"
    args = ["bench", "--tokenizers", f"{trained['a']},{trained['b']}", "--num-images", "16", "--batch-size", "8",
            "--probe-train-images", "48", "--metrics", "psnr,probe,ar-probe,vqa-probe", "--out", str(out), *AR, *VQA]
    # with InceptionV3's file: gFID, flagged below 2,048 samples
    gfid = cli(*[x if x != str(out) else str(tmp_path / "gfid") for x in args], "--weights-dir", str(weights))
    assert gfid.returncode == 0, gfid.stderr
    g = json.loads((tmp_path / "gfid" / "results.json").read_text())["tokenizers"][name_of(trained["a"])]
    assert g["metrics"]["gfid"] > 0 and g["flags"]["gfid"].startswith("rank-deficient: N = 16 < 2048")
    # without it: the rest of the probe, and gFID said to be unavailable, naming the file
    run = cli(*args, "--weights-dir", str(tmp_path / "none"))
    assert run.returncode == 0, run.stderr
    assert "gfid unavailable" in run.stdout and "weights-inception-2015-12-05" in run.stdout
    args += ["--weights-dir", str(tmp_path / "none")]
    res = json.loads((out / "results.json").read_text())
    a = res["tokenizers"][name_of(trained["a"])]
    for key in ("ar_nll_bits", "ar_nll_bits_per_token", "gen_class_acc", "judge_top1", "gfd_judge"):
        assert key in a["metrics"], key
    assert "gfid" not in a["metrics"] and a["metrics"]["gen_class_acc"] == g["metrics"]["gen_class_acc"]
    assert a["metrics"]["ar_nll_bits_per_token"] == pytest.approx(a["metrics"]["ar_nll_bits"] / 64)
    lo, hi = a["intervals"]["ar_nll_bits"]
    assert lo <= a["metrics"]["ar_nll_bits"] <= hi and "gen_class_acc" in a["intervals"]
    assert "dataset-specific" in a["flags"]["gfd_judge"]
    p = res["protocol"]["metrics"]["ar-probe"]  # every setting, recorded
    assert p["size"] == "micro" and p["steps"] == 8 and p["cfg_scale"] == 2.0 and p["sampling"]["temperature"] == 1
    assert a["metric_protocols"]["ar-probe"] == p
    # the VQA probe: a mean and one score per question, each with its interval and chance level
    for q in ("shape", "colour", "outline", "size", "position", "background"):
        assert f"vqa_{q}" in a["intervals"] and 0 <= a["metrics"][f"vqa_{q}_chance"] <= 1, q
    assert "vqa_top1" in a["intervals"] and res["protocol"]["metrics"]["vqa-probe"]["input"].startswith("token_features")
    assert "VQA top-1" in run.stdout
    md = (out / "results.md").read_text()
    assert "AR bits" in md and "gen acc" in md and "dataset-specific" in md
    assert "| tokenizer | shape | colour | outline | size | position | background | mean |" in md
    assert md.count(" ± ") >= 14 and "vqa_colour |" not in md  # per question in its own table only
    csv_head = (out / "results.csv").read_text().splitlines()[0]
    assert "vqa_position" in csv_head and "vqa_position_chance" in csv_head and "vqa_position_lo95" in csv_head
    assert (out / "samples_grid.png").is_file()
    html_text = (out / "report.html").read_text()
    assert 'id="samples"' in html_text and "Generated samples (AR probe)" in html_text
    assert "and generation" in html_text  # the trade-off picture gains its generation panel
    assert 'id="vqa"' in html_text and 'class="chance"' in html_text
    # the same bench again: the same samples and numbers (seeded), reused
    again = cli(*args)
    assert again.returncode == 0 and again.stdout.count("reusing finished results") == 2
    # other AR settings are never compared with these
    other = tmp_path / "other"
    assert cli(*[x if x != str(out) else str(other) for x in args], "metrics.ar-probe.cfg_scale=1.0").returncode == 0
    refused = cli("compare", str(other / "results.json"), "--baseline", str(out / "results.json"))
    assert refused.returncode == 2 and "'ar-probe' was measured under other settings" in refused.stderr
    assert "cfg_scale 1.0 vs 2.0" in refused.stderr
    # into the first folder: the earlier results under the other settings are set aside, not mixed
    mixed = cli("bench", "--tokenizers", str(trained["a"]), *args[3:], "metrics.ar-probe.cfg_scale=1.0")
    assert mixed.returncode == 0 and "held results under another protocol" in " ".join(mixed.stdout.split())
    assert list(out.glob("results.2*.json"))


def test_a_hostile_folder_name_reaches_every_output_as_text(trained, tmp_path, cli):
    """A run folder named with Markdown, HTML, rich markup, math text and a CSV formula, benched for real."""
    odd = tmp_path / "=HYPERLINK(1)|<b>x<i>[bold]$m$[red]"
    shutil.copytree(trained["a"], odd)
    out = tmp_path / "bench [/] $x$"
    run = cli("bench", "--tokenizers", str(odd), "--num-images", "8", "--batch-size", "8", "--metrics", "psnr",
              "--out", str(out))
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert "bench [/] $x$/results.md" in run.stdout  # printed as the text it is
    md = (out / "results.md").read_text()
    row = next(line for line in md.splitlines() if "HYPERLINK" in line)
    assert "\\|" in row and "&lt;b>" in row and "<b>" not in md
    header = next(line for line in md.splitlines() if line.startswith("| tokenizer |"))
    assert len(re.findall(r"(?<!\\)\|", row)) == len(re.findall(r"(?<!\\)\|", header))
    rows = list(csv.reader(io.StringIO((out / "results.csv").read_text())))
    assert rows[1][0].endswith(odd.name) and not any(c and c[0] in "=+@" for r in rows for c in r)
    page = (out / "report.html").read_text()
    assert "<b>" not in page and "&lt;b&gt;x&lt;i&gt;" in page
    assert (out / "tradeoff.png").is_file() or "probe" not in run.stdout


def test_a_stray_unlabelled_train_image_is_left_out_of_the_probes_and_said(trained, tmp_path):
    """train/ with class folders and one image in its root (label -1): the probes train on the rest, flagged."""
    from PIL import Image

    from tokzoo.bench.harness import Bench, BenchOptions

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 6)):
        for c in ("cat", "dog"):
            (tmp_path / "in" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                    tmp_path / "in" / split / c / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "in" / "train" / "stray.png")
    opts = BenchOptions(tokenizers=[str(trained["a"])], data=f"imagefolder:{tmp_path / 'in'}", num_images=12,
                        metrics=["probe", "ar-probe"], probe_train_images=25, batch_size=8,
                        metric_params={"ar-probe": {"size": "micro", "steps": 4, "judge_steps": 4, "train_images": 25,
                                                    "judge_images": 24, "batch_size": 8}},
                        out_dir=str(tmp_path / "b"))
    (entry,) = Bench(opts).run()["tokenizers"].values()
    assert "probe_top1" in entry["metrics"] and "ar_nll_bits" in entry["metrics"], entry.get("unavailable")
    assert "1 train images without a class were left out" in entry["flags"]["probe_top1"]
    assert "1 without a class left out" in entry["flags"]["ar_nll_bits"]


def test_loader_workers_change_no_number(trained, tmp_path, cli):
    """A JPEG folder laid out like ImageNet (one file unreadable), benched with the
    images decoded in the main process and by two loader processes: the same
    images in the same order, every number and interval identical, the skip said."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for split, n in (("train", 12), ("val", 10)):
        for c in ("n01", "n02"):
            (tmp_path / "in" / split / c).mkdir(parents=True)
            for i in range(n // 2):
                Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
                    tmp_path / "in" / split / c / f"{c}_{i}.JPEG", format="JPEG")
    (tmp_path / "in" / "val" / "n02" / "broken.JPEG").write_bytes(b"not a jpeg")
    runs = {}
    for workers in ("0", "2"):
        out = cli("bench", "--tokenizers", str(trained["a"]), "--data", f"imagefolder:{tmp_path / 'in'}",
                  "--num-images", "11", "--batch-size", "4", "--probe-train-images", "12", "--workers", workers,
                  "--metrics", "psnr,ssim,codebook,probe", "--out", str(tmp_path / f"w{workers}"), cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        runs[workers] = json.loads((tmp_path / f"w{workers}" / "results.json").read_text())["tokenizers"][name_of(trained["a"])]
    a, b = runs["0"], runs["2"]
    assert a["num_images"] == b["num_images"] == 10 and a["skipped_images"] == b["skipped_images"] == 1
    assert a["metrics"] == b["metrics"] and a["intervals"] == b["intervals"] and a["skipped"] == b["skipped"]
    bad = cli("bench", "--tokenizers", str(trained["a"]), "--workers", "-1", cwd=tmp_path)
    assert bad.returncode == 2 and "--workers" in bad.stderr and "Traceback" not in bad.stderr


def test_a_rebench_after_the_images_changed_measures_again(trained, tmp_path, cli):
    """Round four: the reuse check once compared the tokenizer alone; now every split the
    entry read is fingerprinted (files, labels) and checked before a result is reused."""
    from PIL import Image

    def folder(seed: int) -> None:
        g = np.random.default_rng(seed)
        for c in ("a", "b"):
            (tmp_path / "imgs" / c).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                Image.fromarray(g.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    folder(0)
    args = ["bench", "--tokenizers", str(trained["a"]), "--data", f"imagefolder:{tmp_path / 'imgs'}",
            "--metrics", "psnr", "--num-images", "all", "--out", str(tmp_path / "out")]
    first = cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    psnr = json.loads((tmp_path / "out" / "results.json").read_text())["tokenizers"][name_of(trained["a"])]["metrics"]
    assert "reusing" in cli(*args).stdout  # nothing changed: reused, and said
    folder(1)  # the same names and sizes, other pixels
    again = cli(*args)
    assert again.returncode == 0 and "reusing" not in again.stdout
    now = json.loads((tmp_path / "out" / "results.json").read_text())["tokenizers"][name_of(trained["a"])]["metrics"]
    assert now["psnr"] != psnr["psnr"]


def test_precision_is_in_the_protocol_marked_in_every_output_and_never_compared_across(trained, tmp_path, cli):
    """#34: --precision bf16 runs the tokenizer's encode and decode under bf16 autocast (on the CPU
    here too), records it, marks every output, and compare refuses to hold it against fp32."""
    args = ["bench", "--tokenizers", str(trained["a"]), "--num-images", "8", "--metrics", "psnr,codebook"]
    fp32 = cli(*args, "--out", str(tmp_path / "fp32"), cwd=tmp_path)
    bf16 = cli(*args, "--precision", "bf16", "--out", str(tmp_path / "bf16"), cwd=tmp_path)
    assert fp32.returncode == 0 and bf16.returncode == 0, bf16.stdout + bf16.stderr
    r32, r16 = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("fp32", "bf16"))
    assert r32["protocol"]["precision"] == {"name": "fp32", "autocast": None, "tf32": False}
    assert r16["protocol"]["precision"] == {"name": "bf16", "autocast": "bfloat16", "tf32": True}
    p32, p16 = (r["tokenizers"][name_of(trained["a"])]["metrics"]["psnr"] for r in (r32, r16))
    assert p16 != p32 and abs(p16 - p32) < 1.0  # bf16 rounding: other numbers, close ones
    said = " ".join(bf16.stdout.split())
    assert "precision bf16" in said and "not comparable with fp32" in said
    assert "Precision bf16" in (tmp_path / "bf16" / "results.md").read_text()
    assert "Precision bf16" in (tmp_path / "bf16" / "report.html").read_text()
    assert (tmp_path / "bf16" / "results.csv").read_text().splitlines()[0].endswith(",precision")
    assert "precision" not in (tmp_path / "fp32" / "results.md").read_text().lower()
    out = cli("compare", str(tmp_path / "bf16"), "--baseline", str(tmp_path / "fp32"))
    assert out.returncode == 2 and "differ in 'precision'" in out.stderr
    # a results.json written before precision was recorded reads as fp32
    old = dict(r32, protocol={k: v for k, v in r32["protocol"].items() if k != "precision"})
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert cli("compare", str(tmp_path / "fp32"), "--baseline", str(tmp_path / "old.json")).returncode == 0
    bad = cli(*args, "--precision", "fp16", "--out", str(tmp_path / "bad"), cwd=tmp_path)
    assert bad.returncode == 2 and "--precision must be one of fp32, tf32, bf16" in bad.stderr


def test_tf32_is_set_for_the_bench_on_a_cuda_device_and_put_back():
    from tokzoo.bench.measure import tf32

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with tf32(torch.device("cuda"), True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with tf32(torch.device("cuda"), False):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with tf32(torch.device("cpu"), True):  # nothing to set on the CPU
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_inception_is_loaded_once_and_never_run_twice_on_the_same_images(trained, weights, tmp_path, monkeypatch):
    """#34: rfid and the AR probe's gFID both asked: one InceptionV3, the originals' features computed once."""
    import hashlib

    from tokzoo.bench import fid, generation
    from tokzoo.bench.harness import Bench, BenchOptions

    real, loads, seen = fid.load_inception, [], []

    def counting(*args, **kwargs):
        model, sha = real(*args, **kwargs)
        loads.append(sha)
        forward = model.forward

        def recorded(x):
            seen.append(hashlib.sha256(x.contiguous().cpu().numpy().tobytes()).hexdigest())
            return forward(x)

        model.forward = recorded
        return model, sha

    monkeypatch.setattr(fid, "load_inception", counting)
    monkeypatch.setattr(generation, "load_inception", counting)
    monkeypatch.setenv("TOKZOO_CACHE_DIR", str(tmp_path / "cache"))
    ar = {"size": "micro", "steps": 2, "train_images": 32, "judge_steps": 2, "samples": 8, "judge_images": 32}
    res = Bench(BenchOptions([str(trained["a"])], metrics=["rfid", "ar-probe"], num_images=16, batch_size=8,
                             probe_train_images=32, weights_dir=str(weights), out_dir=str(tmp_path / "b"),
                             metric_params={"ar-probe": ar}), console=None).run()
    e = res["tokenizers"][name_of(trained["a"])]
    assert "rfid" in e["metrics"] and "gfid" in e["metrics"], e["unavailable"]
    assert len(loads) == 1  # one network for both metrics
    assert len(seen) == len(set(seen)) and len(seen) >= 2 + 2 + 1  # per batch: originals once, recons; samples
