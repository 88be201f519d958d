"""`tokzoo sweep`: every point trained and benched under one protocol, resumable."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port
from tokzoo.errors import ConfigError
from tokzoo.sweep import grid_points, parse_grid, split_values

TINY = ["model.resolution=32", "data.resolution=32", "data.train_size=64", "data.val_size=32",
        "model.encoder.ch=8", "model.decoder.ch=8", "model.encoder.z_channels=16", "model.decoder.z_channels=16",
        "trainer.batch_size=8", "trainer.eval_images=8"]
BENCH = "--num-images 16 --probe-train-images 32 --batch-size 8 --metrics psnr,ssim,codebook,probe"


def test_grid_words():
    assert split_values("4,8,[1,2],{a: 1, b: 2}") == ["4", "8", "[1,2]", "{a: 1, b: 2}"]
    axes, fixed = parse_grid(["m:model.sub_codebook_size=4,8", "model.ch_mult=[1,2],[1,2,2]", "recipe.steps=3"])
    assert [(a.alias, a.key, a.values) for a in axes] == [("m", "model.sub_codebook_size", ["4", "8"]),
                                                         ("ch_mult", "model.ch_mult", ["[1,2]", "[1,2,2]"])]
    assert fixed == ["recipe.steps=3"]
    points = grid_points(axes)
    assert [p.name for p in points] == ["m=4,ch_mult=12", "m=4,ch_mult=122", "m=8,ch_mult=12", "m=8,ch_mult=122"]
    assert points[1].values == {"m": 4, "ch_mult": [1, 2, 2]}
    assert points[1].overrides == ["model.sub_codebook_size=4", "model.ch_mult=[1,2,2]"]
    for bad, why in ((["recipe.steps=3"], "nothing to sweep"), (["a.x=1,2", "b.x=3,4"], "both called 'x'"),
                     (["a=1,,2"], "empty"), (["a=1,1"], "names a value twice"), (["steps"], "is not key=value")):
        with pytest.raises(ConfigError, match=why):
            parse_grid(bad)


def _sweep(cli, out, *extra, timeout=600):
    return cli("sweep", "vq-tiny", "q:model.quantizer.codebook_size=16,32", *TINY, "recipe.steps=2",
               "--out", str(out), f"--bench-args={BENCH}", *extra, timeout=timeout)


@pytest.mark.paper
def test_sweep_trains_benches_and_resumes(cli, tmp_path):
    out = tmp_path / "sw"
    # a value the model cannot be built with: that point fails with its reason, the others are benched
    broken = cli("sweep", "vq-tiny", "q:model.quantizer.codebook_size=16,0", *TINY, "recipe.steps=2",
                 "--out", str(tmp_path / "broken"), f"--bench-args={BENCH}")
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert "q=0: exit 2: error: quantizer 'vq' at 'model.quantizer' cannot be built" in " ".join(broken.stderr.split())
    kept = json.loads((tmp_path / "broken" / "results.json").read_text())["tokenizers"]
    assert [Path(k).name for k in kept] == ["q=16"]

    run = _sweep(cli, out, "--jobs", "2")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    entries = {Path(k).name: e for k, e in res["tokenizers"].items()}
    assert set(entries) == {"q=16", "q=32"}
    assert entries["q=16"]["swept"] == {"q": 16} and entries["q=32"]["swept"] == {"q": 32}
    assert entries["q=32"]["info"]["vocab"] == {"code": 32}  # the value reached the trained model
    assert "probe_top1" in entries["q=16"]["metrics"] and res["protocol"]["num_images"] == 16
    assert (out / "results.csv").read_text().splitlines()[0].startswith("tokenizer,q,")
    assert "| q |" in (out / "results.md").read_text()
    for f in ("tradeoff.png", "report.html", "sweep.json"):
        assert (out / f).is_file(), f
    # the same command again: nothing trained or measured twice
    before = {p: (p / "metrics.jsonl").stat().st_mtime for p in (out / "points").iterdir() if p.is_dir()}
    again = _sweep(cli, out, "--jobs", "2")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 of 2 points already trained (skipped)" in again.stdout
    assert again.stdout.count("reusing finished results") == 2
    assert {p: (p / "metrics.jsonl").stat().st_mtime for p in before} == before
    assert json.loads((out / "results.json").read_text())["tokenizers"] == res["tokenizers"]
    # another grid into the same folder is refused, nothing touched
    other = cli("sweep", "vq-tiny", "q:model.quantizer.codebook_size=16,64", *TINY, "--out", str(out))
    assert other.returncode == 2 and "holds another sweep" in other.stderr and "Traceback" not in other.stderr


def test_sweep_bad_input_is_refused_before_anything_is_written(cli, tmp_path):
    out = tmp_path / "sw"
    bad_key = cli("sweep", "vq-tiny", "model.quantizer.codebok_size=16,32", "--out", str(out))
    assert bad_key.returncode == 2 and "codebok_size" in bad_key.stderr and "Traceback" not in bad_key.stderr
    assert not out.exists()
    bad_bench = cli("sweep", "vq-tiny", "model.quantizer.codebook_size=16,32", "--out", str(out),
                    "--bench-args=--num-images zero")
    assert bad_bench.returncode == 2 and "--bench-args" in bad_bench.stderr
    # bench's own validation, before any point trains: a metric name, a metric parameter, a baseline file
    for words, said in (("--metrics psnr,fid", "unknown metric 'fid'"),
                        ("--metrics psnr metrics.psnr.bogus=1", "bogus"),
                        (f"--baseline {tmp_path / 'none.json'}", "does not exist"),
                        ("--data shapez", "unknown dataset 'shapez'")):
        refused = cli("sweep", "vq-tiny", "model.quantizer.codebook_size=16,32", "--out", str(out),
                      f"--bench-args={words}")
        assert refused.returncode == 2 and said in refused.stderr and "Traceback" not in refused.stderr, words
    assert not out.exists()
    bad_preset = cli("sweep", "vq-tyni", "model.quantizer.codebook_size=16,32", "--out", str(out))
    assert bad_preset.returncode == 2 and "vq-tiny" in bad_preset.stderr
    assert not out.exists()


@pytest.mark.paper
def test_a_killed_sweep_continues_where_it_stopped(tmp_path):
    """SIGKILL the sweep while a point trains: the point is stopped too (no orphan
    keeps its lock), and the same command finishes every point, each step once."""
    out = tmp_path / "sw"
    cmd = [sys.executable, "-m", "tokzoo.cli", "sweep", "vq-tiny", "q:model.quantizer.codebook_size=16,32,48", *TINY,
           "recipe.steps=60", "trainer.ckpt_every=5", "trainer.log_every=1", "--out", str(out),
           f"--bench-args={BENCH}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    second = out / "points" / "q=32" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not second.exists() and time.time() < deadline:  # the first point done, the second under way
        time.sleep(0.5)
    assert second.exists(), "the second point never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lock = out / "points" / "q=32" / ".tokzoo.lock"
    for _ in range(60):  # the trainer got SIGTERM from the kernel when the sweep died: it saves and stops
        if not lock.exists():
            break
        time.sleep(0.5)
    assert not lock.exists(), "the point's training outlived the sweep"
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 of 3 points already trained (skipped)" in done.stdout
    res = json.loads((out / "results.json").read_text())
    assert sorted(Path(k).name for k in res["tokenizers"]) == ["q=16", "q=32", "q=48"]
    for point in ("q=16", "q=32", "q=48"):
        records = [json.loads(line) for line in (out / "points" / point / "metrics.jsonl").open()]
        steps = [r["step"] for r in records if "images_per_s" in r]  # the training-step records
        assert steps == sorted(set(steps)) and steps[-1] == 60, point  # each step once


@pytest.mark.paper
def test_each_point_can_run_under_torchrun(cli, tmp_path):
    out = tmp_path / "sw"
    run = _sweep(cli, out, f"--torchrun=--nproc_per_node 2 --master_port {free_port()}")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    log = (out / "logs" / "q=16.log").read_text()
    assert "torch.distributed.run --nproc_per_node 2" in log
    cfg = json.loads((out / "points" / "q=16" / "config.json").read_text())
    assert cfg["model"]["quantizer"]["codebook_size"] == 16
    assert len(json.loads((out / "results.json").read_text())["tokenizers"]) == 2


@pytest.mark.paper
def test_points_can_span_two_machines(tmp_path):
    """Two 'machines' (two sweep processes, node ranks 0 and 1, one shared folder):
    each point is one 2-process torchrun job across them; machine 0 benches."""
    out = tmp_path / "sw"
    env = dict(os.environ, OMP_NUM_THREADS="1")

    port = free_port()

    def sweep(rank: int) -> subprocess.Popen:
        launch = f"--torchrun=--nnodes 2 --node_rank {rank} --nproc_per_node 1 --master_addr 127.0.0.1 " \
                 f"--master_port {port}"
        return subprocess.Popen([sys.executable, "-m", "tokzoo.cli", "sweep", "vq-tiny",
                                 "q:model.quantizer.codebook_size=16,32", *TINY, "recipe.steps=2", "--out", str(out),
                                 f"--bench-args={BENCH}", launch], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env)

    first, second = sweep(0), sweep(1)
    out0, _ = first.communicate(timeout=600)
    out1, _ = second.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, out0[-2000:] + out1[-2000:]
    assert "machine 0 benches them" in out1
    for point in ("q=16", "q=32"):
        log = (out / "logs" / f"{point}.node1.log").read_text()
        assert "--node_rank 1" in log
        assert (out / "points" / point / "checkpoints" / "finished").is_file()
    res = json.loads((out / "results.json").read_text())
    assert sorted(Path(k).name for k in res["tokenizers"]) == ["q=16", "q=32"]


def test_a_points_progress_is_its_logs_last_line(tmp_path):
    """What the sweep shows under its bar while a point trains: the end of the point's log (a
    long log is not read whole; a progress line redrawn with carriage returns counts as lines)."""
    from tokzoo.sweep.run import _last_line

    log = tmp_path / "p.log"
    log.write_text("x" * 100_000 + "\nstage 1/1: reconstruction\nrecon 1/20\rrecon 7/20\r\n\n")
    assert _last_line(log) == "recon 7/20"
    assert _last_line(tmp_path / "missing.log") == "?"
