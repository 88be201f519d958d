"""Trainings and sweeps as cluster jobs through submitit (#36): the SLURM submission
checked against stand-in SLURM commands (what sbatch receives, what sacct reports,
what scancel is asked), the same jobs run for real by submitit's debug and local
executors, a preemption in the middle of a 2-task job resuming to the same weights."""
from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from conftest import run_tokzoo, run_tokzoo_here

pytest.importorskip("submitit")

TINY = ["data.train_size=32", "data.val_size=8", "trainer.eval_images=8", "recipe.steps=4", "trainer.batch_size=4"]

SBATCH = """#!/bin/sh
n=$(ls "$FAKE_SLURM" | grep -c '^submitted-')
cp "$1" "$FAKE_SLURM/submitted-$n.sh"
echo "Submitted batch job $((4200 + n))"
"""
SACCT = """#!/bin/sh
echo "JobID|State|NodeList"
cat "$FAKE_SLURM/states" 2>/dev/null
"""
SCANCEL = """#!/bin/sh
echo "$@" >> "$FAKE_SLURM/cancelled"
"""


@pytest.fixture
def fake_slurm(tmp_path):
    """sbatch, srun, sacct and scancel stand-ins first on PATH; their records in ``tmp_path/slurm``."""
    bin_dir, record = tmp_path / "slurm-bin", tmp_path / "slurm"
    bin_dir.mkdir()
    record.mkdir()
    for name, text in {"sbatch": SBATCH, "srun": "#!/bin/sh\nexit 0\n", "sacct": SACCT, "scancel": SCANCEL}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM": str(record)}, record


def _sbatch_lines(path: Path) -> set[str]:
    return {line for line in path.read_text().splitlines() if line.startswith("#SBATCH")}


@pytest.mark.parametrize("flags, said", [
    (["--partition", "gpu"], "--partition is a cluster setting: add --launcher submitit"),
    (["--launcher", "submitit", "--cluster", "slurmm"], "--cluster must be one of slurm, local, debug"),
    (["--launcher", "submitit", "--nodes", "0"], "--nodes must be a whole number >= 1"),
    (["--launcher", "submitit", "--slurm", "constraint"], "--slurm 'constraint': give KEY=VALUE"),
    (["--launcher", "submitit", "--slurm", "a b=1"], "an sbatch parameter name"),
    (["--launcher", "submitit", "--partition", "gpu;rm"], "is not a SLURM name"),
    (["--launcher", "submitit", "--cluster", "local", "--nodes", "2"], "runs on this machine: --nodes must be 1"),
    (["--launcher", "submitit", "--gpus-per-node", "2", "--tasks-per-node", "3"], "one task per GPU"),
    (["--launcher", "submitit"], "SLURM's commands (srun, sbatch) are not on this machine's PATH"),
])
def test_cluster_settings_are_checked_before_anything_is_submitted(tmp_path, flags, said):
    out = run_tokzoo_here("train", "vq-tiny", f"run_dir={tmp_path / 'run'}", *flags, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 2 and said in " ".join(out.stderr.split()) and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()


def test_a_missing_submitit_names_the_extra(monkeypatch):
    import sys

    from tokzoo.cluster.job import require_submitit
    from tokzoo.errors import ConfigError

    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(ConfigError, match=r"pip install 'tokzoo\[slurm\]'"):
        require_submitit()


def test_train_on_slurm_is_the_sbatch_a_user_would_write(tmp_path, fake_slurm):
    env, record = fake_slurm
    out = run_tokzoo_here("train", "vq-tiny", "run_dir=runs/big", "--launcher", "submitit", "--partition", "gpu",
                          "--nodes", "2", "--gpus-per-node", "8", "--cpus-per-task", "10", "--mem-gb", "200",
                          "--time", "2880", "--account", "lab", "--qos", "high", "--slurm", "constraint=a100",
                          "--slurm", "exclude=node7", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    said = " ".join(out.stdout.split())
    assert "submitted job 4200 (slurm, 2 nodes x 8 tasks)" in said and "scancel 4200" in said
    lines = _sbatch_lines(record / "submitted-0.sh")
    want = {"--partition=gpu", "--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--cpus-per-task=10",
            "--mem=200GB", "--time=2880", "--account=lab", "--qos=high", "--constraint=a100", "--exclude=node7",
            "--signal=USR2@90", "--job-name=tokzoo-vq-tiny", f"--output={tmp_path}/runs/big/jobs/%j_0_log.out"}
    assert {f"#SBATCH {w}" for w in want} <= lines
    # the pickled job is the same command, in the user's folder, with ranks from the job's environment
    import cloudpickle

    (pkl,) = (tmp_path / "runs" / "big" / "jobs").glob("*_submitted.pkl")
    job = cloudpickle.loads(pkl.read_bytes()).function
    assert (job.preset, job.run_dir, job.cwd, job.resume) == ("vq-tiny", "runs/big", str(tmp_path), False)
    # a second submission into the same run folder without --resume: refused as the trainer would refuse it
    (tmp_path / "runs" / "big" / "checkpoints" / "step-00000002").mkdir(parents=True)
    (tmp_path / "runs" / "big" / "checkpoints" / "latest").write_text("step-00000002\n")
    again = run_tokzoo_here("train", "vq-tiny", "run_dir=runs/big", "--launcher", "submitit", cwd=tmp_path, env=env)
    assert again.returncode == 2 and "already holds a run; use --resume" in again.stderr


def test_rank_environment_is_what_torchrun_sets(monkeypatch):
    from tokzoo.cluster.job import rank_environment

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    for k, v in {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "16", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1",
                 "SLURM_PROCID": "11", "SLURM_LOCALID": "3", "SLURM_JOB_NODELIST": "gpu[017-018]"}.items():
        monkeypatch.setenv(k, v)
    env = rank_environment()
    assert {k: env[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR")} == {
        "RANK": "11", "LOCAL_RANK": "3", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "MASTER_ADDR": "gpu017"}
    assert 20000 <= int(env["MASTER_PORT"]) < 40000


def test_sweep_on_slurm_submits_points_then_a_dependent_bench(tmp_path, fake_slurm):
    env, record = fake_slurm
    sweep = ["sweep", "vq-tiny", "K:model.quantizer.codebook_size=16,32", *TINY, "--out", "runs/sw",
             "--launcher", "submitit", "--partition", "gpu", "--gpus-per-node", "4",
             "--bench-args", "--num-images 8 --metrics psnr"]
    out = run_tokzoo_here(*sweep, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    jobs = json.loads((tmp_path / "runs" / "sw" / "jobs.json").read_text())
    assert {n: r["job_id"] for n, r in jobs["points"].items()} == {"K=16": "4200", "K=32": "4201"}
    assert jobs["bench"]["job_id"] == "4202"
    bench = _sbatch_lines(record / "submitted-2.sh")
    assert {"#SBATCH --dependency=afterany:4200:4201", "#SBATCH --ntasks-per-node=1",
            "#SBATCH --gpus-per-node=1"} <= bench
    assert "#SBATCH --ntasks-per-node=4" in _sbatch_lines(record / "submitted-0.sh")
    # what runs: sacct's states, each point's row
    (record / "states").write_text("4200|RUNNING|gpu1\n4201|FAILED|gpu2\n4202|PENDING|\n")
    st = run_tokzoo_here("sweep", "--status", "runs/sw", cwd=tmp_path, env=env)
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in st.stdout.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}
    assert rows == {"K=16": "running", "K=32": "failed", "(bench)": "queued"}, st.stdout
    assert "runs/sw/jobs/4201_0_log.out" in st.stdout and "1 failed, 1 running" in st.stdout
    # the same command again: only the failed point is submitted (the running one is left), and a new bench
    again = run_tokzoo_here(*sweep, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert "K=16: job 4200 is running (left as it is)" in " ".join(again.stdout.split())
    jobs = json.loads((tmp_path / "runs" / "sw" / "jobs.json").read_text())
    assert jobs["points"]["K=32"]["job_id"] == "4203" and jobs["points"]["K=16"]["job_id"] == "4200"
    assert "#SBATCH --dependency=afterany:4203:4200" in _sbatch_lines(record / "submitted-4.sh")
    # cancel: every job still queued or running
    (record / "states").write_text("4200|RUNNING|gpu1\n4203|PENDING|\n4204|PENDING|\n")
    cancel = run_tokzoo_here("sweep", "--cancel", "runs/sw", cwd=tmp_path, env=env)
    assert cancel.returncode == 0 and "3 jobs cancelled" in cancel.stdout
    assert sorted((record / "cancelled").read_text().split()) == ["4200", "4203", "4204"]


@pytest.mark.paper
def test_the_debug_executor_trains_in_this_process(tmp_path):
    out = run_tokzoo("train", "vq-tiny", *TINY, "run_dir=runs/d", "--launcher", "submitit", "--cluster", "debug",
                     cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "runs" / "d" / "checkpoints" / "finished").is_file()
    assert "it runs in this process" in " ".join(out.stdout.split())


def _steps(run: Path) -> list[int]:
    f = run / "metrics.jsonl"
    return [json.loads(line).get("step", 0) for line in f.read_text().splitlines()] if f.is_file() else []


@pytest.mark.paper
def test_a_preempted_two_task_job_requeues_and_ends_bit_identical(tmp_path, monkeypatch):
    """submitit's local executor, 2 tasks (gloo): USR2 to every task mid-training (what SLURM sends
    before a time limit or a preemption): the step is saved, the job requeues itself with --resume,
    and its final weights equal those of the same job never interrupted."""
    from safetensors.torch import load_file
    import torch

    from tokzoo.cluster.job import TrainJob, make_executor
    from tokzoo.cluster.options import ClusterOptions

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    common = ["data.train_size=64", "data.val_size=8", "trainer.eval_images=8", "recipe.steps=30",
              "trainer.batch_size=4", "trainer.log_every=2", "trainer.ckpt_every=1000"]
    opts = ClusterOptions(cluster="local", tasks_per_node=2, time=30)

    def submit(name):
        return make_executor(opts, tmp_path / "runs" / name / "jobs", name).submit(
            TrainJob("vq-tiny", [*common, f"run_dir=runs/{name}"], f"runs/{name}", str(tmp_path)))

    whole, cut = submit("whole"), submit("cut")
    deadline = time.time() + 300
    while max(_steps(tmp_path / "runs" / "cut") or [0]) < 6:
        assert time.time() < deadline and not cut.done(), cut.paths.stdout.read_text()[-2000:]
        time.sleep(0.2)
    tasks = Path(f"/proc/{cut.job_id}/task/{cut.job_id}/children").read_text().split()
    assert len(tasks) == 2
    for pid in tasks:
        os.kill(int(pid), signal.SIGUSR2)
    whole.results(), cut.results()
    log = cut.paths.stdout.read_text()
    assert "Requeued job" in log and "resumed from runs/cut/checkpoints/step-" in log, log[-3000:]
    a = load_file(str(tmp_path / "runs" / "whole" / "checkpoints" / "stage1-final" / "model.safetensors"))
    b = load_file(str(tmp_path / "runs" / "cut" / "checkpoints" / "stage1-final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = _steps(tmp_path / "runs" / "cut")
    assert steps[-1] == 30


@pytest.mark.paper
def test_a_sweep_of_two_task_points_on_the_local_executor(tmp_path, tiny_teacher):
    """The issue's command on this machine: semhitok-tiny, two sub-codebook sizes, each point a job
    of 2 tasks, then the bench job; the status; the same command again submits nothing."""
    sweep = ["sweep", "semhitok-tiny", "model.sub_codebook_size=4,8", f"model.teacher.checkpoint={tiny_teacher}",
             "data.train_size=32", "data.val_size=8", "trainer.eval_images=8", "recipe.stage1_steps=2",
             "recipe.stage2_steps=2", "trainer.batch_size=4", "--out", "runs/sw", "--launcher", "submitit",
             "--cluster", "local", "--tasks-per-node", "2", "--bench-args", "--num-images 8 --metrics psnr,codebook"]
    env = {"OMP_NUM_THREADS": "1"}
    out = run_tokzoo(*sweep, cwd=tmp_path, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    results = json.loads((tmp_path / "runs" / "sw" / "results.json").read_text())
    assert sorted(v for e in results["tokenizers"].values() for v in e["swept"].values()) == [4, 8]
    logs = sorted((tmp_path / "runs" / "sw" / "jobs").glob("*_log.out"))
    assert len(logs) == 5  # two points of two tasks, one bench
    st = run_tokzoo("sweep", "--status", "runs/sw", cwd=tmp_path)
    assert st.returncode == 0 and "2 done" in st.stdout
    again = run_tokzoo(*sweep, cwd=tmp_path, env=env, timeout=600)
    assert again.returncode == 0 and "submitted job" not in again.stdout.split("bench")[0]


def test_a_damaged_jobs_file_is_refused_in_one_line(tmp_path, fake_slurm):
    env, _ = fake_slurm
    sweep = ["sweep", "vq-tiny", "K:model.quantizer.codebook_size=16,32", *TINY, "--out", "runs/sw",
             "--launcher", "submitit", "--partition", "gpu"]
    assert run_tokzoo_here(*sweep, cwd=tmp_path, env=env).returncode == 0
    jobs = tmp_path / "runs" / "sw" / "jobs.json"
    for text in ("{", '{"points": []}', '{"points": {"K=16": {"job_id": 4200}}}',
                 '{"points": {"K=16": {"job_id": "1", "cluster": "pbs", "folder": "x"}}}'):
        jobs.write_text(text)
        for cmd in (["sweep", "--status", "runs/sw"], ["sweep", "--cancel", "runs/sw"], sweep):
            out = run_tokzoo_here(*cmd, cwd=tmp_path, env=env)
            assert out.returncode == 2 and "jobs.json is unreadable" in out.stderr, (text, cmd, out.stderr)
            assert "Traceback" not in out.stderr
