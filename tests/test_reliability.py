"""Run folders and results under kills, concurrency, full disks and bad input,
through the real CLI where a user would meet them (issue: integrity)."""
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tokzoo
from conftest import REPO, run_tokzoo
from tokzoo.errors import CheckpointError

TINY = ["model.resolution=16", "data.resolution=16", "data.train_size=256", "data.val_size=16",
        "model.encoder.ch=8", "model.decoder.ch=8", "model.encoder.z_channels=16", "model.decoder.z_channels=16",
        "model.quantizer.codebook_size=64", "trainer.batch_size=8", "trainer.eval_images=16", "trainer.log_every=2"]


def _clean(out):
    assert "Traceback" not in out.stderr, out.stderr[-2000:]


@contextlib.contextmanager
def _lock_held_by_a_live_process(folder: Path, command: str):
    """``folder/.tokzoo.lock`` held by another running process of this host, as a tokzoo command
    holds it (its pid is yielded)."""
    folder.mkdir(parents=True, exist_ok=True)
    code = ("import sys, time; from tokzoo.runfolder import RunLock; folder = sys.argv[1]; "
            "sys.argv[1:] = sys.argv[2:]; RunLock(folder).acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder), *command.split()[1:]],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def _train(run, *extra, **kw):
    return run_tokzoo("train", "vq-tiny", *TINY, f"run_dir={run}", *extra, **kw)


def _steps(run):
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in recs if "recon" in r]


@pytest.mark.parametrize("override, message", [
    ("trainer.batch_size=0", "trainer.batch_size must be a positive integer, not 0"),
    ("trainer.batch_size=-4", "trainer.batch_size must be a positive integer, not -4"),
    ("trainer.log_every=0", "trainer.log_every must be a positive integer"),
    ("trainer.ckpt_every=0", "trainer.ckpt_every must be a positive integer"),
    ("trainer.grad_accum=0", "trainer.grad_accum must be a positive integer"),
    ("trainer.max_steps=0", "trainer.max_steps must be a positive cap"),
    ("trainer.precision=fp8", "trainer.precision=fp8 is not one of fp32, bf16"),
    ("trainer.device=tpu", "trainer.device 'tpu' is not a device tokzoo runs on: auto, cpu, cuda, cuda:N or mps"),
    ("trainer.lr=-1", "trainer.lr must be a finite number >= 0, not -1"),
    ("trainer.beta1=1.5", "trainer.beta1 must be in [0, 1)"),
])
def test_bad_trainer_values_are_refused(override, message):
    from tokzoo.config import load_run_config
    from tokzoo.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_run_config("vq-tiny", TINY + [override])
    assert message in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("trainer.batch_size=0", "trainer.batch_size must be a positive integer, not 0"),
    ("trainer.device=tpu", "trainer.device 'tpu' is not a device tokzoo runs on: auto, cpu, cuda, cuda:N or mps"),
])
def test_bad_trainer_values_through_the_cli_write_nothing(tmp_path, override, message):
    out = _train(tmp_path / "run", override)
    assert out.returncode == 2 and message in out.stderr, out.stderr[-1500:]
    _clean(out)
    assert not (tmp_path / "run").exists()


@pytest.mark.paper
def test_refused_train_leaves_the_run_untouched(tmp_path):
    run = tmp_path / "run"
    assert _train(run, "recipe.steps=2").returncode == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    out = _train(run, "recipe.steps=2", "trainer.lr=1e-3")
    assert out.returncode == 2 and "already holds a run" in out.stderr
    out = _train(run, "recipe.steps=2", "seed=5", "--resume")
    assert out.returncode == 2 and "differ(s) from the run's recorded config" in out.stderr
    _clean(out)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # config.json included: nothing rewritten by a refused command


@pytest.mark.paper
def test_finished_stage_is_not_saved_again_on_resume(tmp_path):
    run = tmp_path / "run"
    assert _train(run, "recipe.steps=4").returncode == 0
    final = run / "checkpoints" / "stage1-final" / "model.safetensors"
    stamp = (final.stat().st_ino, final.stat().st_mtime_ns)
    lines = (run / "metrics.jsonl").read_text()
    out = _train(run, "recipe.steps=4", "--resume")
    assert out.returncode == 0, out.stderr[-1500:]
    assert (final.stat().st_ino, final.stat().st_mtime_ns) == stamp
    assert (run / "metrics.jsonl").read_text() == lines


@pytest.mark.paper
def test_kill_between_the_two_renames_loses_nothing(tmp_path):
    """The window of a replaced tag: the old copy moved away, the new one not yet in place."""
    run = tmp_path / "run"
    assert _train(run, "recipe.steps=4", "trainer.ckpt_every=2").returncode == 0
    ck = run / "checkpoints"
    ref = tokzoo.load_tokenizer(run)
    (ck / "stage1-final").rename(ck / ".tmp-stage1-final-deadbeef")  # the new copy, complete
    assert (ck / "latest").read_text().strip() == "stage1-final"
    tok = tokzoo.load_tokenizer(run)  # readers find the complete copy
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), tok.state_dict().values()))
    out = _train(run, "recipe.steps=4", "trainer.ckpt_every=2", "--resume")
    assert out.returncode == 0, out.stderr[-1500:]
    assert (ck / "stage1-final" / "model.safetensors").is_file() and not list(ck.glob(".tmp-*"))


@pytest.mark.paper
def test_latest_cannot_point_outside_the_run(tmp_path, cli):
    run = tmp_path / "run"
    assert _train(run, "recipe.steps=2").returncode == 0
    other = tmp_path / "other"
    shutil.copytree(run / "checkpoints" / "stage1-final", other / "x")
    (run / "checkpoints" / "latest").write_text("../../other/x\n")
    with pytest.raises(CheckpointError, match="not a checkpoint of this run"):
        tokzoo.load_tokenizer(run)
    out = cli("bench", "--tokenizers", str(run), "--num-images", "4", "--out", str(tmp_path / "b"))
    assert out.returncode == 2 and "not a checkpoint of this run" in out.stderr
    _clean(out)


@pytest.mark.paper
def test_second_writer_is_refused_and_stale_lock_taken_over(tmp_path):
    run = tmp_path / "run"
    with _lock_held_by_a_live_process(run, "tokzoo train vq-tiny") as pid:
        out = _train(run, "recipe.steps=2")
        assert out.returncode == 2 and f"in use by another tokzoo process (pid {pid}" in out.stderr
        _clean(out)
        assert (run / ".tokzoo.lock").exists() and not (run / "config.json").exists()
    out = _train(run, "recipe.steps=2")  # the holder is gone: the lock is stale
    assert out.returncode == 0, out.stderr[-1500:]
    assert not (run / ".tokzoo.lock").exists()


@pytest.mark.paper
def test_two_concurrent_trains_on_one_folder(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "tokzoo.cli", "train", "vq-tiny", *TINY, "recipe.steps=60", f"run_dir={run}"]
    a = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    b = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    (_, ea), (_, eb) = a.communicate(timeout=300), b.communicate(timeout=300)
    codes = sorted([a.returncode, b.returncode])
    assert codes == [0, 2], (ea[-800:], eb[-800:])
    loser = ea if a.returncode else eb
    assert "in use by another tokzoo process" in loser or "already holds a run" in loser
    steps = _steps(run)
    assert steps == sorted(set(steps))  # one writer's log, each step once


def _until_logged(proc, run, n, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        f = run / "metrics.jsonl"
        if f.exists() and len(_steps(run)) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read()[-1500:])
        time.sleep(0.1)
    raise AssertionError("training did not log in time")


@pytest.mark.paper  # long checks: make test-paper (CI)
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_saves_the_current_step_and_says_how_to_resume(tmp_path, sig, code):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "tokzoo.cli", "train", "vq-tiny", *TINY, "recipe.steps=80",
           "trainer.ckpt_every=1000", f"run_dir={run}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    _until_logged(proc, run, 5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-1500:]
    assert "Traceback" not in err and "Continue with: tokzoo train vq-tiny --resume" in err
    latest = (run / "checkpoints" / "latest").read_text().strip()
    step = int(latest.split("-")[1])
    assert step >= 10 and f"at step {step}" in err  # the step it was at, not the last periodic one
    # the command it names, typed as it is printed (every override kept): it resumes, never refused
    import shlex

    again = shlex.split(err.split("Continue with: ", 1)[1].splitlines()[0])
    assert again[:4] == ["tokzoo", "train", "vq-tiny", "--resume"] and f"run_dir={run}" in again
    out = run_tokzoo(*again[1:], env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-1500:]
    steps = _steps(run)
    assert steps == sorted(set(steps)) and steps[-1] == 80  # each step logged once


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """ENOSPC injected into the checkpoint writer (what a full tmpfs raises)."""
    import tokzoo.ckptio as ckptio
    from tokzoo.config import load_run_config
    from tokzoo.train.trainer import Trainer

    real = ckptio.save_file
    calls = {"n": 0}

    def full_disk(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] >= 2:
            with open(path, "wb") as f:
                f.write(b"\0" * 100)  # a partial file, as a real full disk leaves
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(ckptio, "save_file", full_disk)
    run = tmp_path / "run"
    cfg = load_run_config("vq-tiny", TINY + ["recipe.steps=6", "trainer.ckpt_every=2", f"run_dir={run}"])
    with pytest.raises(CheckpointError, match=r"no space left.*needs about .* MB.*'step-00000002'\) is intact"):
        Trainer(cfg).train()
    ck = run / "checkpoints"
    assert (ck / "latest").read_text().strip() == "step-00000002"
    assert not list(ck.glob(".tmp-*")) and not (run / ".tokzoo.lock").exists()
    monkeypatch.setattr(ckptio, "save_file", real)
    Trainer(load_run_config("vq-tiny", TINY + ["recipe.steps=6", "trainer.ckpt_every=2",
                                               f"run_dir={run}"])).train(resume=True)
    assert (ck / "latest").read_text().strip() == "stage1-final"
    steps = _steps(run)
    assert steps == sorted(set(steps))


@pytest.mark.paper
def test_cli_reports_disk_full_in_one_line(tmp_path):
    """The same through the real CLI: a sitecustomize makes the second checkpoint hit ENOSPC."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import errno, tokzoo.ckptio as c\n_real, _n = c.save_file, [0]\n"
        "def f(t, p, metadata=None):\n    _n[0] += 1\n"
        "    if _n[0] >= 2: raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "    return _real(t, p, metadata=metadata)\nc.save_file = f\n")
    env = {"PYTHONPATH": os.pathsep.join([str(hook), str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = _train(tmp_path / "run", "recipe.steps=6", "trainer.ckpt_every=2", env=env)
    assert out.returncode == 2 and "no space left" in out.stderr and "is intact" in out.stderr, out.stderr[-1500:]
    _clean(out)


# -- results: merged, locked, honest -----------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tokzoo.config import load_run_config
    from tokzoo.registry import reset_registry
    from tokzoo.train.trainer import Trainer

    root = tmp_path_factory.mktemp("rel-runs")
    for name in ("a", "b"):
        reset_registry()
        Trainer(load_run_config("vq-tiny", TINY + ["recipe.steps=2", f"seed={len(name)}",
                                                   f"run_dir={root / name}"])).train()
    return root


def _png(path: Path, value: int = 100, size: int = 24) -> None:
    from PIL import Image

    Image.new("RGB", (size, size), (value, value // 2, 255 - value)).save(path)


@pytest.mark.paper
def test_num_images_honesty_and_flat_folders(tmp_path, trained, cli):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(20):
        _png(flat / f"img_{i:03d}.png", 10 * i)
    base = ["bench", "--tokenizers", str(trained / "a"), "--data", f"imagefolder:{flat}", "--metrics", "psnr"]
    out = cli(*base, "--num-images", "50", "--out", str(tmp_path / "b1"))
    assert out.returncode == 2 and "has only 20 images" in out.stderr and "--num-images all" in out.stderr
    _clean(out)
    out = cli(*base, "--num-images", "all", "--out", str(tmp_path / "b2"))
    assert out.returncode == 0, out.stderr[-1500:]
    res = json.loads((tmp_path / "b2" / "results.json").read_text())
    assert res["protocol"]["num_images"] == "all"
    assert next(iter(res["tokenizers"].values()))["num_images"] == 20  # the whole flat folder, no hidden split
    for flag in ("--num-images", "--batch-size", "--probe-train-images"):
        out = cli("bench", "--tokenizers", str(trained / "a"), flag, "0", "--out", str(tmp_path / "b3"))
        assert out.returncode == 2 and "must be a positive integer" in out.stderr, flag
        _clean(out)


@pytest.mark.paper
def test_results_are_merged_and_the_grid_shows_everyone(tmp_path, trained, cli):
    out_dir = tmp_path / "bench"
    out_dir.mkdir()
    (out_dir / ".results.json.0badc0de.tmp").write_text("half")  # a bench killed mid-write (atomic_write's name)
    common = ["--num-images", "8", "--metrics", "psnr", "--out", str(out_dir)]
    assert cli("bench", "--tokenizers", str(trained / "a"), *common).returncode == 0
    assert cli("bench", "--tokenizers", str(trained / "b"), *common).returncode == 0
    res = json.loads((out_dir / "results.json").read_text())
    assert set(res["tokenizers"]) == {"a", "b"}  # a's results kept, each under its name, its path in the entry
    assert {e["path"] for e in res["tokenizers"].values()} == {str(trained / "a"), str(trained / "b")}
    from safetensors.torch import load_file

    rows = load_file(str(out_dir / "grid_samples.safetensors"))
    assert set(rows) == {"originals", "tok:a", "tok:b"}
    assert not list(out_dir.glob(".*.tmp")) and not (out_dir / ".tokzoo.lock").exists()
    # another protocol: the old file is set aside whole, never mixed in
    out = cli("bench", "--tokenizers", str(trained / "b"), "--num-images", "4", "--metrics", "psnr",
              "--out", str(out_dir))
    assert out.returncode == 0 and "held results under another protocol" in out.stdout
    kept = [p for p in out_dir.glob("results.*.json")]
    assert len(kept) == 1 and len(json.loads(kept[0].read_text())["tokenizers"]) == 2


@pytest.mark.paper
def test_a_second_bench_on_one_out_is_refused(tmp_path, trained, cli):
    out_dir = tmp_path / "bench"
    with _lock_held_by_a_live_process(out_dir, "tokzoo bench"):
        out = cli("bench", "--tokenizers", str(trained / "a"), "--num-images", "4", "--out", str(out_dir))
        assert out.returncode == 2 and "in use by another tokzoo process" in out.stderr
        _clean(out)


@pytest.mark.paper
@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["tokenizers"]["x"].pop("metrics"), "has no 'metrics' mapping"),
    (lambda r: r["tokenizers"]["x"]["metrics"].update(psnr="high"), "metric 'psnr' is not a number"),
    (lambda r: r.update(tokenizers=[]), "not a tokzoo results.json"),
])
def test_compare_rejects_bad_files_with_exit_2(tmp_path, cli, mutate, message):
    good = {"protocol": {}, "tokenizers": {"x": {"metrics": {"psnr": 20.0}, "better": {"psnr": "higher"}}}}
    (tmp_path / "good.json").write_text(json.dumps(good))
    bad = json.loads(json.dumps(good))
    mutate(bad)
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    out = cli("compare", str(tmp_path / "bad.json"), "--baseline", str(tmp_path / "good.json"))
    assert out.returncode == 2 and message in out.stderr, out.stderr
    _clean(out)


@pytest.mark.paper
def test_compare_folders_and_tolerances(tmp_path, cli):
    good = {"protocol": {}, "tokenizers": {"x": {"metrics": {"psnr": 20.0}, "better": {"psnr": "higher"}}}}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(good))
    assert cli("compare", str(tmp_path / "run"), "--baseline", str(tmp_path / "run")).returncode == 0
    out = cli("compare", str(tmp_path / "run"), "--baseline", str(tmp_path / "run"), "--tolerance", "psnr=nan")
    assert out.returncode == 2 and "finite number" in out.stderr
    out = cli("compare", str(tmp_path), "--baseline", str(tmp_path / "run"))
    assert out.returncode == 2 and "without a results.json" in out.stderr


# -- inputs -------------------------------------------------------------------------------
@pytest.mark.paper
def test_only_unreadable_images_is_an_error_in_train_and_bench(tmp_path, trained, cli):
    junk = tmp_path / "junk"
    (junk / "train" / "cls").mkdir(parents=True)
    (junk / "val" / "cls").mkdir(parents=True)
    for split in ("train", "val"):
        for i in range(8):
            (junk / split / "cls" / f"{i}.png").write_bytes(b"not a png")
    model_only = [a for a in TINY if not a.startswith("data.")]
    out = run_tokzoo("train", "vq-tiny", *model_only, f"data={{name: imagefolder, path: {junk}, resolution: 16}}",
                     "recipe.steps=4", f"run_dir={tmp_path / 'run'}")
    assert out.returncode == 2 and "no readable image in the training data" in out.stderr, out.stderr[-1500:]
    _clean(out)
    assert not (tmp_path / "run").exists()
    out = cli("bench", "--tokenizers", str(trained / "a"), "--data", f"imagefolder:{junk}", "--num-images", "8",
              "--out", str(tmp_path / "b"))
    assert out.returncode == 2 and "none of the 8 images" in out.stderr and "8 skipped" in out.stderr
    _clean(out)


def test_exif_orientation_odd_names_and_captions(tmp_path):
    from PIL import Image

    from tokzoo.data import build_dataset
    from tokzoo.data.images import load_rgb

    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").size == (20, 40)
    folder = tmp_path / "odd"
    folder.mkdir()
    weird = os.fsdecode(b"\xff\xfe-latin1-\xe9.png")  # not UTF-8: a surrogate-escaped name
    _png(folder / weird)
    _png(folder / "plain.png")
    (folder / "captions.jsonl").write_bytes(b'{"file": "plain.png", "caption": "caf\xe9"}\n')
    ds = build_dataset({"name": "imagefolder", "path": str(folder), "resolution": 16}, "val")
    assert len(ds) == 2 and ds.fingerprint().startswith("imagefolder:")
    assert "caf" in ds[[f.name for f in ds.files].index("plain.png")]["caption"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder: an unreadable folder cannot be made")
def test_unreadable_subfolder_is_counted(tmp_path):
    from tokzoo.data import build_dataset

    (tmp_path / "ok").mkdir()
    _png(tmp_path / "ok" / "a.png")
    (tmp_path / "locked").mkdir()
    _png(tmp_path / "locked" / "b.png")
    os.chmod(tmp_path / "locked", 0)
    try:
        ds = build_dataset({"name": "imagefolder", "path": str(tmp_path), "resolution": 16}, "val")
        assert len(ds) == 1 and len(ds.unreadable_folders) == 1
    finally:
        os.chmod(tmp_path / "locked", 0o755)


@pytest.mark.paper
def test_unfinished_preset_run_is_flagged(tmp_path, cli):
    assert cli("train", "vq-tiny", *TINY, "recipe.steps=4", "trainer.ckpt_every=2", cwd=tmp_path).returncode == 0
    ck = tmp_path / "runs" / "vq-tiny" / "checkpoints"
    assert (ck / "finished").read_text().strip() == "stage1-final"
    out = cli("bench", "--tokenizers", "vq-tiny", "--num-images", "4", "--metrics", "psnr", cwd=tmp_path)
    assert out.returncode == 0 and "has not finished" not in out.stdout
    (ck / "finished").unlink()  # as after a kill: the last checkpoint is all there is
    (ck / "latest").write_text("step-00000002\n")
    out = cli("bench", "--tokenizers", "vq-tiny", "--num-images", "4", "--metrics", "psnr", "--out", "runs/b2",
              cwd=tmp_path)
    said = " ".join(out.stdout.split())  # the terminal wraps at 80 columns
    assert out.returncode == 0 and "run has not finished; benched from its checkpoint 'step-00000002'" in said
    md = (tmp_path / "runs" / "b2" / "results.md").read_text()
    assert "vq-tiny (unfinished: step-00000002)" in md


@pytest.mark.paper
def test_a_plugin_calling_sys_exit_at_import_fails_alone(tmp_path, cli):
    from conftest import make_dist

    make_dist(tmp_path, "tokzoo-quitter", "0.0.1", {"quitter": "quitter_plugin"},
              {"quitter_plugin.py": "import sys\nsys.exit(0)\n"})
    env = {"PYTHONPATH": str(tmp_path)}
    out = cli("plugins", env=env)
    assert out.returncode == 0 and "failed" in out.stdout and "SystemExit" in out.stdout, out.stdout
    listed = cli("list", "quantizer", env=env)
    assert listed.returncode == 0 and "vq" in listed.stdout  # every other command still does its work


def test_results_json_that_is_not_a_mapping_is_set_aside(tmp_path, monkeypatch):
    from tokzoo.bench.results import load_previous

    out = tmp_path / "b"
    out.mkdir()
    (out / "results.json").write_text("[]")
    said = []
    assert load_previous(out / "results.json", {}, ["x"], said.append)["tokenizers"] == {}
    assert said and "unreadable" in said[0]
    assert list(out.glob("results.unreadable-*.json"))


def test_unwritable_out_is_refused_before_measuring(tmp_path, monkeypatch):
    """A read-only --out (fault injection: root may write anywhere)."""
    import tokzoo.ckptio as ckptio
    from tokzoo.bench.harness import Bench, BenchOptions
    from tokzoo.errors import ConfigError

    real_open = os.open

    def denied(path, flags, *a):
        if str(path).endswith(".tokzoo.lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(ckptio.os, "open", denied)
    with pytest.raises(ConfigError, match="cannot write there"):
        Bench(BenchOptions(tokenizers=["vq-tiny"], out_dir=str(tmp_path / "ro"), device="cpu")).run()


def test_unreadable_subfolder_is_counted_by_fault_injection(tmp_path, monkeypatch):
    """The same as the chmod test, for root (who reads every folder): os.walk reports the error."""
    from tokzoo.data import build_dataset

    (tmp_path / "ok").mkdir()
    _png(tmp_path / "ok" / "a.png")
    (tmp_path / "locked").mkdir()
    _png(tmp_path / "locked" / "b.png")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    ds = build_dataset({"name": "imagefolder", "path": str(tmp_path), "resolution": 16}, "val")
    assert len(ds) == 1 and ds.unreadable_folders == [str(tmp_path / "locked")]
