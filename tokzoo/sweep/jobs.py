"""A sweep as cluster jobs (``--launcher submitit``): each point one job of
``tasks`` ranks, then the bench of every finished point a job that waits on
them (SLURM: ``--dependency=afterany``; on this machine the command waits).

``OUT/jobs.json`` records each point's job (id, cluster, folder); running the
same command again submits only the points that are neither finished nor
queued or running (a failed or vanished point is resubmitted, with ``--resume``
where it saved a step). ``tokzoo sweep --status OUT`` shows every point's state
and the log of each failure; ``tokzoo sweep --cancel OUT`` cancels every job
still queued or running."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tokzoo import runfolder
from tokzoo.ckptio import atomic_write
from tokzoo.cluster.job import BenchJob, TrainJob, make_executor, require_submitit
from tokzoo.cluster.options import CLUSTERS
from tokzoo.cluster.submit import JobError, wait_for
from tokzoo.errors import ConfigError
from tokzoo.textsafe import console as esc

JOBS_FILE = "jobs.json"
#: SLURM's states (sacct) -> what the status shows
_SLURM = {"PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "CONFIGURING": "queued",
          "RESIZING": "queued", "SUSPENDED": "queued", "RUNNING": "running", "COMPLETING": "running",
          "COMPLETED": "done"}


def read_jobs(out: Path) -> dict[str, Any]:
    path = out / JOBS_FILE
    if not path.is_file():
        return {"points": {}, "bench": None}
    try:
        data = json.loads(path.read_text())
        records = list(data["points"].values()) + ([data["bench"]] if data.get("bench") is not None else [])
        for r in records:  # every record as this module writes it: a damaged file is refused, not half-read
            if not (isinstance(r.get("job_id"), str) and r.get("cluster") in CLUSTERS
                    and isinstance(r.get("folder"), str) and isinstance(r.get("tasks", 1), int)):
                raise ValueError
        return data
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        raise ConfigError(f"{path} is unreadable; move it away (its jobs are not tracked then)") from None


def _job(record: dict[str, Any]):
    """The submitit job a record names, rebuilt from its id (another process may have submitted it)."""
    submitit = require_submitit()
    folder, job_id = Path(record["folder"]), str(record["job_id"])
    if record["cluster"] == "slurm":
        return submitit.SlurmJob(folder=folder, job_id=job_id, tasks=tuple(range(record.get("tasks", 1))))
    return submitit.LocalJob(folder=folder, job_id=job_id, tasks=tuple(range(record.get("tasks", 1))))


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    try:  # the pid is a submitit controller, not a process that took the number since
        return b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def job_state(record: dict[str, Any] | None) -> str:
    """'done' | 'running' | 'queued' | 'failed' | 'unknown' | 'not submitted' of a recorded job."""
    if not record:
        return "not submitted"
    if record["cluster"] == "debug":
        return record.get("state", "unknown")
    job = _job(record)
    if record["cluster"] == "local":
        if _pid_alive(record["job_id"]):
            return "running"
        result = Path(record["folder"]) / f"{record['job_id']}_0_result.pkl"
        if not result.is_file():
            return "failed"
        try:
            return "done" if job.results() is not None else "failed"
        except Exception:
            return "failed"
    state = str(job.state).upper().split()[0] if job.state else "UNKNOWN"
    return _SLURM.get(state, "unknown" if state == "UNKNOWN" else "failed")


def log_of(record: dict[str, Any], out: Path | None = None) -> Path:
    """A job's log (task 0's); under ``out`` as the user named it when it lies in OUT/jobs."""
    log = Path(record["folder"]) / f"{record['job_id']}_0_log.out"
    if out is not None and Path(record["folder"]) == (out / "jobs").resolve():
        return out / "jobs" / log.name
    return log


def point_state(run_dir: Path, record: dict[str, Any] | None) -> str:
    if runfolder.finished_file(run_dir).is_file():
        return "done"
    state = job_state(record)
    return "failed" if state == "done" else state  # a job that ended without finishing its run


def run_on_cluster(sweep) -> dict[str, Any]:
    """Submit what is missing; on this machine, wait for it and bench."""
    opts, out = sweep.cluster, sweep.out
    folder = (out / "jobs").resolve()
    jobs = read_jobs(out)
    jobs["cluster"] = opts.cluster
    cwd = os.getcwd()
    submitted, waiting = [], []
    done = sum(runfolder.finished_file(p.run_dir).is_file() for p in sweep.points)
    if done:
        sweep.console.print(f"{done} of {len(sweep.points)} points already trained (skipped)", highlight=False)
    for p in sweep.points:
        record = jobs["points"].get(p.name)
        state = point_state(p.run_dir, record)
        if state == "done":
            continue
        if state in ("running", "queued"):
            if opts.cluster != "slurm":
                raise ConfigError(f"point {p.name}: job {record['job_id']} (an earlier command's) is still {state}; "
                                  f"wait for it, or cancel it: tokzoo sweep --cancel {out}")
            sweep.console.print(f"{esc(p.name)}: job {esc(record['job_id'])} is {state} (left as it is)",
                                highlight=False)
            waiting.append((p.name, None, record))
            continue
        resume = runfolder.has_checkpoint(p.run_dir)
        job = make_executor(opts, folder, f"tokzoo-{sweep.preset}-{p.name}").submit(
            TrainJob(sweep.preset, [*sweep.fixed, *p.overrides, f"run_dir={p.run_dir}"], str(p.run_dir), cwd,
                     resume=resume))
        record = {"job_id": str(job.job_id), "cluster": opts.cluster, "folder": str(folder), "tasks": opts.tasks}
        jobs["points"][p.name] = record
        atomic_write(out / JOBS_FILE, json.dumps(jobs, indent=2))
        sweep.console.print(f"{esc(p.name)}: submitted job {esc(job.job_id)}{' (resumes)' * resume}; log: "
                            f"{esc(log_of(record, out))}", highlight=False)
        submitted.append((p.name, job, record))
    pending = submitted + waiting
    bench_job = BenchJob(sweep.bench_options_for(sweep.points), cwd)
    one = replace(opts, nodes=1, tasks_per_node=1, gpus_per_node=min(1, opts.gpus_per_node))  # the bench's job
    if opts.cluster == "slurm":
        if pending:
            after = ":".join(r["job_id"] for _, _, r in pending)
            one = replace(one, slurm={**opts.slurm, "dependency": f"afterany:{after}"})
        job = make_executor(one, folder, f"tokzoo-{sweep.preset}-bench").submit(bench_job)
        jobs["bench"] = {"job_id": str(job.job_id), "cluster": "slurm", "folder": str(folder), "tasks": 1}
        atomic_write(out / JOBS_FILE, json.dumps(jobs, indent=2))
        sweep.console.print(f"bench: job {esc(job.job_id)}, after the points' jobs; see what runs: tokzoo sweep "
                            f"--status {esc(out)}; cancel it all: tokzoo sweep --cancel {esc(out)}", highlight=False)
        return {}
    failed = {}
    if pending:
        try:
            wait_for([j for _, j, _ in pending], [n for n, _, _ in pending], sweep.console)
        except JobError as exc:
            failed = {n: str(exc) for n, _, _ in pending if not runfolder.finished_file(sweep.out / "points" / n)
                      .is_file()}
            if len(failed) == len(sweep.points):
                raise
            sweep.console.print(f"[red]{esc(exc, keep=chr(10))}[/]", highlight=False)
        for name, _, record in pending:
            if opts.cluster == "debug":
                record["state"] = "failed" if name in failed else "done"
        atomic_write(out / JOBS_FILE, json.dumps(jobs, indent=2))
    job = make_executor(one, folder, f"tokzoo-{sweep.preset}-bench").submit(bench_job)
    jobs["bench"] = {"job_id": str(job.job_id), "cluster": opts.cluster, "folder": str(folder), "tasks": 1}
    atomic_write(out / JOBS_FILE, json.dumps(jobs, indent=2))
    wait_for([job], ["bench"], sweep.console)
    sweep.console.print(f"benched: {esc(out / 'results.md')}, {esc(out / 'report.html')}", highlight=False)
    if opts.cluster == "debug":
        jobs["bench"]["state"] = "done"
        atomic_write(out / JOBS_FILE, json.dumps(jobs, indent=2))
    if failed:
        raise JobError(f"{len(failed)} of {len(sweep.points)} points failed to train (the rest are benched; run "
                          f"the same command again to resubmit them; tokzoo sweep --status {out})")
    return json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}


def status(out: Path, console: Console) -> int:
    """``tokzoo sweep --status OUT``: each point's state, job and (failed) log."""
    manifest = _manifest(out)
    jobs = read_jobs(out)
    table = Table(title=f"sweep {esc(out)}", title_justify="left")
    for col in ("point", "state", "job", "log"):
        table.add_column(col, overflow="fold")
    counts: dict[str, int] = {}
    for p in manifest["points"]:
        record = jobs["points"].get(p["name"])
        state = point_state(out / "points" / p["name"], record)
        counts[state] = counts.get(state, 0) + 1
        log = str(log_of(record, out)) if record and state in ("failed", "running", "unknown") else ""
        table.add_row(esc(p["name"]), state, esc(record["job_id"]) if record else "", esc(log))
    bench = jobs.get("bench")
    if bench:
        state = job_state(bench)  # one query of the scheduler
        table.add_row("(bench)", state, esc(bench["job_id"]), esc(log_of(bench, out)) if state == "failed" else "")
    console.print(table)
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())), highlight=False)
    return 0


def cancel(out: Path, console: Console) -> int:
    """``tokzoo sweep --cancel OUT``: cancel every job of the sweep still queued or running."""
    _manifest(out)
    jobs = read_jobs(out)
    records = [(n, r) for n, r in jobs["points"].items()] + ([("bench", jobs["bench"])] if jobs.get("bench") else [])
    cancelled = 0
    for name, record in records:
        if job_state(record) in ("running", "queued", "unknown") and record["cluster"] != "debug":
            _job(record).cancel(check=False)
            cancelled += 1
            console.print(f"{esc(name)}: cancelled job {esc(record['job_id'])}", highlight=False)
    console.print(f"{cancelled} job{'s' * (cancelled != 1)} cancelled; the same sweep command resubmits what is "
                  "missing (a point resumes from its last step)", highlight=False)
    return 0


def _manifest(out: Path) -> dict[str, Any]:
    path = out / "sweep.json"
    if not path.is_file():
        raise ConfigError(f"{out} holds no sweep (no sweep.json)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{path} is unreadable") from None
