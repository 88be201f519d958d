"""configs/: bench protocol files and sweep files, their precedence under the
command line, their typos refused; the committed ones load and agree with the
baselines measured under them; committed results re-render byte-identical."""
import json

import pytest

from tokzoo.bench.options import BenchOptions, bench_options, default, parse_bench_args, read_bench_file
from tokzoo.cli import build_parser
from tokzoo.errors import ConfigError
from tokzoo.sweep import parse_grid, read_sweep_file, sweep_settings
from conftest import REPO

CONFIGS = REPO / "configs"


def _bench(*words):
    return bench_options(build_parser().parse_args(["bench", *words]))


def test_a_bench_file_then_the_flags_given_override_it(tmp_path):
    f = tmp_path / "protocol.yaml"
    f.write_text("tokenizers: [a, b]\nnum_images: 64\nmetrics: psnr,ssim\nprobe_train_images: 128\n"
                 "data_params: {val_size: 96, train_size: 64}\nmetric_params: {psnr: {}, ssim: {}}\n")
    o = _bench("--config", str(f))
    assert (o.tokenizers, o.num_images, o.metrics, o.probe_train_images) == (["a", "b"], 64, ["psnr", "ssim"], 128)
    assert o.batch_size == default("batch_size") == BenchOptions(tokenizers=[]).batch_size  # one default
    o = _bench("--config", str(f), "--num-images", "all", "--tokenizers", "c", "data.val_size=8", "--out", "x")
    assert (o.tokenizers, o.num_images, o.out_dir) == (["c"], "all", "x")
    assert o.data_params == {"val_size": 8, "train_size": 64}  # merged over the file's, key by key
    assert o.probe_train_images == 128  # not given: the file's
    plain = _bench("--tokenizers", "a")  # no file: the dataclass's defaults, as before
    assert plain == BenchOptions(tokenizers=["a"])


@pytest.mark.parametrize("text,why", [
    ("num_imagse: 8\n", "unknown key 'num_imagse': did you mean 'num_images'"),
    ("- psnr\n", "expected a mapping"),
    ("metrics: 3\n", "'metrics' must be a list of names"),
    ("metric_params: {lpips: vgg}\n", "'metric_params' must be a mapping of metric"),
    ("data: [shapes]\n", "'data' must be a string"),
    ("swept: {a: 1}\n", "unknown key 'swept'"),
    ("tokenizers: [a\n", "not a readable YAML file"),
])
def test_a_bad_bench_file_is_refused_naming_the_key(tmp_path, text, why):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=why):
        read_bench_file(f)


def test_a_typo_in_a_bench_file_exits_2_before_anything_is_written(cli, tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("tokenizers: [vq-tiny]\nprobe_train_image: 8\n")
    out = cli("bench", "--config", str(f), "--out", str(tmp_path / "out"))
    assert out.returncode == 2 and "did you mean 'probe_train_images'" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "out").exists()
    missing = cli("bench", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    # a value the metric itself refuses (not the parameter's type): also before --out is made
    for bad, why in (("metrics.ar-probe.precision=fp16", "'fp16' is not one of fp32, bf16"),
                     ("metrics.ar-probe.size=huge", "'huge' is not one of")):
        out = cli("bench", "--tokenizers", "vq-tiny", "--metrics", "psnr,ar-probe", bad, "--out", str(tmp_path / "o"))
        assert out.returncode == 2 and why in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert not (tmp_path / "o").exists()


def _sweep(*words):
    return sweep_settings(build_parser().parse_args(["sweep", *words]))


def test_a_sweep_file_then_the_command_line(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("preset: vq-tiny\ngrid: ['q:model.quantizer.codebook_size=16,32', recipe.steps=2]\n"
                 "jobs: 2\nout: runs/s\nbench_args: --num-images 16\n")
    s = _sweep("--config", str(f))
    assert s == {"preset": "vq-tiny", "words": ["q:model.quantizer.codebook_size=16,32", "recipe.steps=2"],
                 "out": "runs/s", "jobs": 2, "torchrun": "", "bench_args": "--num-images 16", "cluster": None}
    s = _sweep("--config", str(f), "model.quantizer.codebook_size=8,64", "trainer.lr=1e-3", "--jobs", "1")
    assert s["words"] == ["recipe.steps=2", "model.quantizer.codebook_size=8,64", "trainer.lr=1e-3"]  # replaced, added
    assert s["jobs"] == 1 and s["out"] == "runs/s"
    assert _sweep("vq-tiny", "a.b=1,2")["words"] == ["a.b=1,2"]  # no file: as before
    f.write_text("preset: vq-tiny\ngird: ['a=1,2']\n")
    with pytest.raises(ConfigError, match="unknown key 'gird': did you mean 'grid'"):
        _sweep("--config", str(f))
    f.write_text("grid: ['a=1,2']\n")
    with pytest.raises(ConfigError, match="give the preset"):
        _sweep("--config", str(f))
    # the cluster settings of a file (launcher: submitit), then the command line's over them
    f.write_text("preset: vq-tiny\ngrid: ['a=1,2']\nlauncher: submitit\n"
                 "submitit: {partition: gpu, gpus_per_node: 8, time: 2880, slurm: {constraint: h100}}\n")
    c = _sweep("--config", str(f), "--partition", "big", "--nodes", "2")["cluster"]
    assert (c.partition, c.nodes, c.gpus_per_node, c.tasks, c.time, c.slurm) == ("big", 2, 8, 8, 2880,
                                                                                 {"constraint": "h100"})
    f.write_text("preset: vq-tiny\ngrid: ['a=1,2']\nlauncher: submitit\nsubmitit: {gpus: 8}\n")
    with pytest.raises(ConfigError, match="'submitit' has no setting 'gpus'"):
        _sweep("--config", str(f))
    f.write_text("preset: vq-tiny\ngrid: ['a=1,2']\nsubmitit: {partition: gpu}\n")
    with pytest.raises(ConfigError, match="the file's 'submitit:' is a cluster setting: add --launcher submitit"):
        _sweep("--config", str(f))
    with pytest.raises(ConfigError, match="--torchrun and --jobs out"):
        from tokzoo.sweep import Sweep

        Sweep(**_sweep("vq-tiny", "trainer.lr=1e-3,2e-3", "--launcher", "submitit", "--jobs", "2",
                       "--cluster", "local", "--out", str(tmp_path / "sw")))


def test_a_bad_sweep_file_exits_2_without_training(cli, tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("preset: vq-tiny\ngrid: ['q:model.quantizer.codebook_size=16,32']\njobs: two\n")
    out = cli("sweep", "--config", str(f), "--out", str(tmp_path / "sw"))
    assert out.returncode == 2 and "'jobs' must be an integer" in out.stderr
    assert not (tmp_path / "sw").exists()


def test_the_committed_bench_protocols_are_the_ones_their_baselines_were_measured_under():
    for name, baseline in (("ci.yaml", "ci-baseline.json"), ("reproduce.yaml", "reproduce/results.json")):
        f = read_bench_file(CONFIGS / "bench" / name)
        p = json.loads((REPO / "benchmarks" / "results" / baseline).read_text())["protocol"]
        assert f["num_images"] == p["num_images"] and f["data"] == p["dataset"], name
        assert f["probe_train_images"] == p["probe"]["train_images"], name
    paper = read_bench_file(CONFIGS / "bench" / "imagenet-val-50k.yaml")
    assert paper["num_images"] == 50000 and paper["data"].startswith("imagefolder:")


@pytest.mark.parametrize("name", sorted(p.name for p in (CONFIGS / "bench").glob("*.yaml")))
def test_every_committed_bench_protocol_builds_its_metrics(name):
    """Each configs/bench file passes the bench's checks and every metric it names is built
    with its parameters, before any data exists (a renamed parameter fails here, not on a GPU)."""
    from tokzoo.bench.options import check_options
    from tokzoo.registry import get_registry

    opts = BenchOptions(**{"tokenizers": [], **read_bench_file(CONFIGS / "bench" / name)})
    check_options(opts, tokenizers=False)
    for m in opts.metrics:
        get_registry().create("metric", m, **opts.metric_params.get(m, {})).protocol()


def test_the_committed_sweep_file_parses(monkeypatch):
    from tokzoo.config import load_preset

    monkeypatch.chdir(REPO)  # its paths are read from the checkout's root, as the README runs it
    s = read_sweep_file(CONFIGS / "sweeps" / "semhitok-codebooks.yaml")
    load_preset(s["preset"])
    axes, fixed = parse_grid(s["grid"])
    assert [a.alias for a in axes] == ["m", "K"]
    opts = parse_bench_args(s["bench_args"].split(), tokenizers="sweep")
    assert opts.num_images == read_bench_file(CONFIGS / "bench" / "reproduce.yaml")["num_images"]


def test_committed_results_render_byte_identical():
    """What the renderers write from each committed results.json is what is committed."""
    from tokzoo.bench.render import render_csv, render_markdown

    found = sorted((REPO / "benchmarks" / "results").rglob("results.json"))
    assert found
    for j in found:
        results = json.loads(j.read_text())
        for name, render in (("results.md", render_markdown), ("results.csv", render_csv)):
            if j.with_name(name).is_file():
                assert j.with_name(name).read_bytes() == render(results).encode(), j.with_name(name)
