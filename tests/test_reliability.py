"""Run folders and results under kills, concurrency, full disks and bad input,
through the real CLI where a user would meet them (issue: integrity)."""
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
    ("trainer.device=tpu", "trainer.device=tpu is not one of auto, cpu, cuda, mps"),
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
    ("trainer.device=tpu", "trainer.device=tpu is not one of auto, cpu, cuda, mps"),
])
def test_bad_trainer_values_through_the_cli_write_nothing(tmp_path, override, message):
    out = _train(tmp_path / "run", override)
    assert out.returncode == 2 and message in out.stderr, out.stderr[-1500:]
    _clean(out)
    assert not (tmp_path / "run").exists()


def test_refused_train_leaves_the_run_untouched(tmp_path):
    run = tmp_path / "run"
    assert _train(run, "recipe.steps=2").returncode == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    out = _train(run, "recipe.steps=2", "trainer.lr=1e-3")
    assert out.returncode == 2 and "already holds a run" in out.stderr
    out = _train(run, "recipe.steps=2", "seed=5", "--resume")
    assert out.returncode == 2 and "differs" in out.stderr
    _clean(out)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # config.json included: nothing rewritten by a refused command


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


def test_second_writer_is_refused_and_stale_lock_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (run / ".tokzoo.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                      "since": "now", "command": "tokzoo train vq-tiny"}))
        out = _train(run, "recipe.steps=2")
        assert out.returncode == 2 and f"in use by another tokzoo process (pid {holder.pid}" in out.stderr
        _clean(out)
        assert (run / ".tokzoo.lock").exists() and not (run / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
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
    assert "Traceback" not in err and f"Continue with: tokzoo train vq-tiny --resume run_dir={run}" in err
    latest = (run / "checkpoints" / "latest").read_text().strip()
    step = int(latest.split("-")[1])
    assert step >= 10 and f"at step {step}" in err  # the step it was at, not the last periodic one
    out = _train(run, "recipe.steps=80", "trainer.ckpt_every=1000", "--resume")
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
