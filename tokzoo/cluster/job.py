"""``tokzoo train`` (and a sweep's bench) as a submitit job: every task one rank of
torch.distributed, exactly as ``torchrun`` starts it (ranks, world size and the
master address from submitit's job environment; NCCL on GPUs, gloo on CPUs).

A time limit or a preemption: SLURM (``--signal=USR2@90``, set by submitit) or
submitit's local controller sends USR2 to every task; each asks its training loop
to stop (the trainer's own save-and-stop path: every rank stops after the same
step, the step is saved), then rank 0 hands over to submitit, which calls
:meth:`TrainJob.checkpoint` (the same job with ``--resume``) and requeues it. A
signal outside the training loop (loading, evaluating) requeues at once from the
last checkpoint. The resumed run is the one never interrupted, bit for bit."""
from __future__ import annotations

import os
import signal
import sys
import zlib
from pathlib import Path
from typing import Any

from rich.console import Console

from tokzoo.errors import ConfigError, TokzooError


def require_submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher submitit needs the submitit package: pip install 'tokzoo[slurm]'") from None
    return submitit


class JobFailed(RuntimeError):
    """What a job reports to submitit when tokzoo refused or failed (its one-line message)."""


def _port(job_id: str) -> int:
    """The rendezvous port of a job: fixed by its id (a requeued job keeps it), rarely shared."""
    return 20000 + zlib.crc32(job_id.encode()) % 20000


def rank_environment() -> dict[str, str]:
    """submitit's job environment -> the variables torchrun would set."""
    submitit = require_submitit()
    job = submitit.JobEnvironment()
    here = job.cluster in ("local", "debug")
    return {"RANK": str(job.global_rank), "LOCAL_RANK": str(job.local_rank), "WORLD_SIZE": str(job.num_tasks),
            "LOCAL_WORLD_SIZE": str(max(1, job.num_tasks // max(1, job.num_nodes))),
            "GROUP_RANK": str(job.node), "MASTER_ADDR": "127.0.0.1" if here else job.hostnames[0],
            "MASTER_PORT": os.environ.get("TOKZOO_MASTER_PORT") or str(_port(str(job.job_id)))}


class _Preemption:
    """USR2 (time limit or preemption) while the job runs: stop the training loop at the next
    step all ranks agree on, then requeue through submitit's own handler."""

    def __init__(self):
        self.signum = 0
        self.frame = None
        self.original: Any = None

    def install(self) -> None:
        self.sig = require_submitit().JobEnvironment._usr_sig()
        self.original = signal.getsignal(self.sig)
        signal.signal(self.sig, self._on_signal)

    def uninstall(self) -> None:
        signal.signal(self.sig, self.original if self.original is not None else signal.SIG_DFL)

    def _on_signal(self, signum, frame) -> None:
        from tokzoo.train.signals import request_stop

        self.signum, self.frame = signum, frame
        print(f"tokzoo: {signal.Signals(signum).name} (time limit or preemption): saving the step to requeue",
              file=sys.stderr, flush=True)
        if not request_stop(signal.SIGTERM):  # no training loop to stop (loading, evaluating): requeue now
            self.requeue()

    def requeue(self) -> None:
        """submitit's handler: on rank 0 it calls checkpoint(), requeues and exits; elsewhere it
        returns, and this task ends (the requeue restarts every task)."""
        if callable(self.original):
            self.original(self.signum, self.frame)
        raise SystemExit(-1)


class TrainJob:
    """``tokzoo train PRESET OVERRIDES [--resume] [--stage N]`` in each task of a job."""

    def __init__(self, preset: str, overrides: list[str], run_dir: str, cwd: str, resume: bool = False,
                 stage: int | None = None):
        self.preset, self.overrides, self.run_dir, self.cwd = preset, list(overrides), run_dir, cwd
        self.resume, self.stage = resume, stage

    def __call__(self) -> dict[str, float]:
        os.environ.update(rank_environment())
        threads = os.environ.get("SLURM_CPUS_PER_TASK")
        if threads and "OMP_NUM_THREADS" not in os.environ:
            import torch

            torch.set_num_threads(int(threads))
        os.chdir(self.cwd)
        preemption = _Preemption()
        preemption.install()
        from tokzoo.train import run_training
        from tokzoo.train.signals import TrainingInterrupted

        try:
            return run_training(self.preset, self.overrides, resume=self.resume, stage=self.stage,
                                console=Console(width=100))
        except TrainingInterrupted:
            if preemption.signum:
                preemption.requeue()
            raise JobFailed(f"training was stopped (cancelled?); its step is saved in {self.run_dir}") from None
        except TokzooError as exc:
            print(f"tokzoo: {exc}", file=sys.stderr, flush=True)
            raise JobFailed(str(exc)) from None
        finally:
            preemption.uninstall()

    def checkpoint(self, *args: Any, **kwargs: Any):
        """The job to requeue: the same command, ``--resume`` where a checkpoint is saved."""
        from tokzoo import runfolder

        submitit = require_submitit()
        run_dir = Path(self.cwd, self.run_dir)
        resume = self.resume or runfolder.has_checkpoint(run_dir)
        again = TrainJob(self.preset, self.overrides, self.run_dir, self.cwd, resume=resume,
                         stage=None if resume else self.stage)
        return submitit.helpers.DelayedSubmission(again)

    def __repr__(self) -> str:
        return f"tokzoo train {self.preset} {' '.join(self.overrides)}{' --resume' if self.resume else ''}"


class BenchJob:
    """A sweep's bench of its trained points, as a job of one task (waits on the points)."""

    def __init__(self, opts: Any, cwd: str):
        self.opts, self.cwd = opts, cwd

    def __call__(self) -> dict[str, Any]:
        os.chdir(self.cwd)
        from tokzoo.bench.harness import Bench

        points = [t for t in self.opts.tokenizers if (Path(t) / "checkpoints" / "finished").is_file()]
        if not points:
            raise JobFailed("no point finished training: nothing to bench")
        from dataclasses import replace

        try:
            return Bench(replace(self.opts, tokenizers=points,
                                 swept={k: v for k, v in self.opts.swept.items() if k in points}),
                         Console(width=100)).run()
        except TokzooError as exc:
            print(f"tokzoo: {exc}", file=sys.stderr, flush=True)
            raise JobFailed(str(exc)) from None


def make_executor(opts: Any, folder: Path, name: str):
    """A submitit executor for ``opts`` (:class:`~tokzoo.cluster.options.ClusterOptions`),
    its pickles and logs under ``folder`` (JOBID_TASK_log.out: stdout and stderr together)."""
    submitit = require_submitit()
    kwargs = {"slurm_max_num_timeout": opts.max_requeues} if opts.cluster == "slurm" else {}
    if opts.cluster == "local":
        kwargs = {"local_max_num_timeout": opts.max_requeues}
    import shutil

    if opts.cluster == "slurm" and not (shutil.which("srun") and shutil.which("sbatch")):
        raise ConfigError("--cluster slurm: SLURM's commands (srun, sbatch) are not on this machine's PATH; run it on "
                          "the cluster's login node, or here as --cluster local")
    ex = submitit.AutoExecutor(folder=str(folder), cluster=opts.cluster, **kwargs)
    params: dict[str, Any] = {"name": name, "timeout_min": opts.time, "nodes": opts.nodes,
                              "tasks_per_node": opts.tasks, "gpus_per_node": opts.gpus_per_node,
                              "stderr_to_stdout": True}
    if opts.cpus_per_task:
        params["cpus_per_task"] = opts.cpus_per_task
    if opts.mem_gb:
        params["mem_gb"] = opts.mem_gb
    if opts.cluster == "slurm":
        for key in ("partition", "account", "qos"):
            if getattr(opts, key):
                params[f"slurm_{key}"] = getattr(opts, key)
        if opts.slurm:
            params["slurm_additional_parameters"] = {k.replace("-", "_"): v for k, v in opts.slurm.items()}
    ex.update_parameters(**params)
    return ex
