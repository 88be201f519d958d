"""Submitting: ``tokzoo train ... --launcher submitit`` checks what the trainer
would refuse, submits the job (its pickles and logs under RUN/jobs/), says
where its log is and how to cancel it; on this machine (``--cluster local`` /
``debug``) it waits and shows the job's last log line. A sweep's jobs:
:mod:`tokzoo.sweep.jobs`."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from tokzoo import runfolder
from tokzoo.cluster.job import TrainJob, make_executor
from tokzoo.cluster.options import ClusterOptions
from tokzoo.errors import ConfigError, TokzooError
from tokzoo.textsafe import console as esc


class JobError(TokzooError):
    """A job ended without finishing its work."""

    exit_code = 1


def log_path(job: Any) -> Path:
    """Where a job's task 0 writes (stdout and stderr together)."""
    return Path(job.paths.stdout)


def last_line(path: Path) -> str:
    """The last non-empty line of a log (at most 300 characters), read from its end: a long
    job's log is never read whole; "" when there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def job_outcome(job: Any) -> tuple[str, str]:
    """('done' | 'failed' | 'running', the failure's last line) of a job that may have ended."""
    if type(job).__name__ == "DebugJob":  # runs here, now, in its own environment (never in a debugger)
        saved = dict(os.environ)
        os.environ.update(job.environ)
        try:
            exc = job.exception()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return ("failed", str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__) if exc \
            else ("done", "")
    if not job.done():
        return "running", ""
    try:
        job.results()  # every task's: a task that failed fails the job
    except Exception as exc:  # submitit raises the job's own error text (UncompletedJobError, FailedJobError)
        lines = [line for line in str(exc).splitlines() if line.strip()]
        mine = [line for line in lines if "JobFailed:" in line]
        return "failed", (mine[-1].split("JobFailed:", 1)[1].strip() if mine else (lines[-1] if lines else "?"))
    return "done", ""


def submit_train(preset: str, overrides: list[str], opts: ClusterOptions, resume: bool = False,
                 stage: int | None = None, console: Console | None = None, wait: bool = False) -> Any:
    from tokzoo.config import load_run_config

    console = console or Console()
    config = load_run_config(preset, overrides)  # every key checked before anything is submitted
    if not config.get("recipe"):
        raise ConfigError(f"'{preset}' is a ready-made tokenizer (its preset has no recipe): there is nothing to "
                          f"train. Bench it directly: tokzoo bench --tokenizers {preset}")
    run_dir = Path(config["run_dir"])
    if not resume and stage is None and runfolder.has_checkpoint(run_dir):
        raise ConfigError(f"{run_dir} already holds a run; use --resume to continue it, or set run_dir=... to "
                          "start a new one (nothing was overwritten)")
    if resume and not runfolder.has_checkpoint(run_dir):
        raise ConfigError(f"--resume: {run_dir} holds no checkpoint to continue from")
    runfolder.check_output_folder(run_dir, "run_dir")
    job = make_executor(opts, run_dir / "jobs", f"tokzoo-{preset}").submit(
        TrainJob(preset, overrides, str(run_dir), os.getcwd(), resume=resume, stage=stage))
    where = f"{opts.nodes} node{'s' * (opts.nodes > 1)} x {opts.tasks} task{'s' * (opts.tasks > 1)}"
    console.print(f"submitted job {esc(job.job_id)} ({opts.cluster}, {where}): tokzoo train {esc(preset)}; "
                  + ("it runs in this process" if opts.cluster == "debug" else f"log: {esc(log_path(job))}"),
                  highlight=False)
    if opts.cluster == "slurm" and not wait:
        console.print(f"cancel: scancel {esc(job.job_id)}; a time limit or preemption saves the step and requeues "
                      "the job with --resume", highlight=False)
        return job
    return wait_for([job], ["train"], console)[0]


def wait_for(jobs: list[Any], names: list[str], console: Console, poll_s: float = 1.0) -> list[Any]:
    """Wait for ``jobs``, each job's last log line shown; a failed one is a :class:`JobError`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("[bold]jobs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("\n{task.fields[now]}"), console=console)
    failed = []
    with progress:
        task = progress.add_task("jobs", total=len(jobs), now="")
        pending = dict(zip(names, jobs))
        while pending:
            for name, job in list(pending.items()):
                state, why = job_outcome(job)
                if state == "running":
                    continue
                del pending[name]
                progress.advance(task)
                if state == "failed":
                    failed.append(f"{name}: {why}\n    (log: {log_path(job)})")
                    progress.console.print(f"[red]{esc(name)}: job {esc(job.job_id)} failed[/]", highlight=False)
                else:
                    progress.console.print(f"{esc(name)}: job {esc(job.job_id)} done", highlight=False)
            now = [f"  {name}: {last_line(log_path(job))[:60]}" for name, job in pending.items()][:4]
            progress.update(task, now=esc("\n".join(now), keep="\n"))
            if pending:
                time.sleep(poll_s)
    if failed:
        raise JobError(f"{len(failed)} of {len(jobs)} jobs failed:\n  " + "\n  ".join(esc(f, keep="\n")
                                                                                for f in failed))
    return jobs
