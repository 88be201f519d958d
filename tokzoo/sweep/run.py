"""Running a sweep: every point trained (a ``tokzoo train`` subprocess each,
side by side with ``--jobs``), resumed or skipped, then one bench of all points."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tokzoo import runfolder
from tokzoo.ckptio import atomic_write
from tokzoo.cluster.submit import last_line
from tokzoo.errors import ConfigError, TokzooError
from tokzoo.runfolder import RunLock, check_output_folder
from tokzoo.sweep.grid import Point, grid_points, parse_grid
from tokzoo.textsafe import console as esc


class SweepFailed(TokzooError):
    """Some points could not be trained (the others were benched)."""

    exit_code = 1


def _node_rank(torchrun: list[str]) -> int:
    """The ``--node_rank`` / ``--node-rank`` given to torchrun (0 when absent)."""
    for i, word in enumerate(torchrun):
        for flag in ("--node_rank", "--node-rank"):
            if word == flag and i + 1 < len(torchrun):
                value = torchrun[i + 1]
            elif word.startswith(flag + "="):
                value = word.split("=", 1)[1]
            else:
                continue
            try:
                return int(value)
            except ValueError:
                raise ConfigError(f"--torchrun: {flag} '{value}' is not a number") from None
    return 0


def _last_line(log: Path) -> str:
    """The last line a training printed (its progress, or a failed one's error message),
    read from the end of its log; "?" when there is none."""
    return last_line(log) or "?"


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the sweep process dies (Linux), so the
    trainer saves its step and exits instead of running on as an orphan."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _words(text: str, what: str) -> list[str]:
    """A command line's words as a shell splits them; an unbalanced quote is a clear error."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"{what} {text!r}: {exc} (quote each word at most once, e.g. "
                          f"{what}=\"--num-images 64\")") from None


class Sweep:
    def __init__(self, preset: str, words: list[str], out: str | None, jobs: int = 1, torchrun: str = "",
                 bench_args: str = "", console: Console | None = None, cluster: Any = None):
        from tokzoo.config import load_preset

        if jobs < 1:
            raise ConfigError(f"--jobs must be a positive integer, not {jobs}")
        load_preset(preset)  # an unknown preset fails now, with its closest names
        self.preset, self.jobs, self.console = preset, jobs, console or Console()
        self.axes, self.fixed = parse_grid(words)
        self.points = grid_points(self.axes)
        self.out = Path(out or Path("runs") / f"sweep-{preset}")
        check_output_folder(self.out, "--out")  # a file, the root, the working folder: refused before training
        self.torchrun = _words(torchrun, "--torchrun")
        self.cluster = cluster  # ClusterOptions: each point a submitit job (tokzoo.sweep.jobs)
        if cluster is not None and (self.torchrun or jobs > 1):
            raise ConfigError("--launcher submitit: each point is a job whose tasks are its ranks (--tasks-per-node, "
                              "--gpus-per-node, --nodes); leave --torchrun and --jobs out")
        self.node_rank = _node_rank(self.torchrun)
        if self.node_rank and jobs > 1:
            raise ConfigError("--jobs must be 1 when points span machines (every machine trains the points in "
                              "the grid's order)")
        self.bench_args = _words(bench_args, "--bench-args")
        self.bench_opts = self._bench_options()  # bad bench arguments fail now, before any training
        for p in self.points:
            p.run_dir = self.out / "points" / p.name
        self._check_configs()

    # -- checks that may refuse the command: all before anything is written ---------------------
    def _bench_options(self):
        from tokzoo.bench.options import parse_bench_args

        opts = parse_bench_args(self.bench_args, tokenizers="sweep")  # argparse says what is wrong
        if "--tokenizers" in self.bench_args or "--out" in self.bench_args:
            raise ConfigError("--bench-args: the sweep sets --tokenizers and --out itself")
        from tokzoo.bench.options import check_options

        try:  # bench's own validation (metric names and parameters, data, baseline), before any training
            check_options(opts, tokenizers=False)
        except ConfigError as exc:
            raise ConfigError(f"--bench-args: {exc}") from None
        return opts

    def _check_configs(self) -> None:
        from tokzoo.config import load_run_config

        for p in self.points:  # a key that does not exist, a value that cannot work: refused before training
            try:
                load_run_config(self.preset, [*self.fixed, *p.overrides, f"run_dir={p.run_dir}"])
            except ConfigError as exc:
                raise ConfigError(f"point {p.name}: {exc}") from None

    def manifest(self) -> dict[str, Any]:
        return {"preset": self.preset, "axes": [{"alias": a.alias, "key": a.key, "values": a.values} for a in self.axes],
                "fixed": self.fixed, "bench_args": self.bench_args,
                "points": [{"name": p.name, "values": p.values, "overrides": p.overrides} for p in self.points]}

    def _check_manifest(self) -> None:
        path = self.out / "sweep.json"
        if not path.is_file():
            return
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            raise ConfigError(f"{path} is unreadable; move it away or use another --out") from None
        mine = self.manifest()
        for key in ("preset", "axes", "fixed"):  # what the points are; --bench-args may change (a re-bench)
            if old.get(key) != mine[key]:
                raise ConfigError(f"{self.out} holds another sweep ({key} differs: was {json.dumps(old.get(key))}); "
                                  "run the same command to continue it, or give another --out")

    # -- the sweep ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self._check_manifest()
        if self.node_rank:  # another machine of each point's torchrun: train, nothing else
            failed = self._train_all()
            if failed:
                raise SweepFailed(f"{len(failed)} points failed on this machine (node rank {self.node_rank}); "
                                  f"see {self.out / 'logs'}")
            self.console.print("every point trained; machine 0 benches them", highlight=False)
            return {}
        lock = RunLock(self.out / "points", "sweep folder")
        (self.out / "points").mkdir(parents=True, exist_ok=True)
        lock.acquire()
        try:
            atomic_write(self.out / "sweep.json", json.dumps(self.manifest(), indent=2))
            if self.cluster is not None:
                from tokzoo.sweep.jobs import run_on_cluster

                return run_on_cluster(self)
            failed = self._train_all()
            results = self._bench([p for p in self.points if p.name not in failed])
        finally:
            lock.release()
        if failed:
            lines = [f"{name}: exit {rc}: {_last_line(self.out / 'logs' / (name + '.log'))}\n    "
                     f"(log: {self.out / 'logs' / (name + '.log')})" for name, rc in failed.items()]
            raise SweepFailed(f"{len(failed)} of {len(self.points)} points failed to train (the rest are "
                              "benched; run the same command again to retry them):\n  " + "\n  ".join(lines))
        return results

    def _state(self, p: Point) -> str:
        if runfolder.finished_file(p.run_dir).is_file():
            return "finished"
        return "resume" if runfolder.has_checkpoint(p.run_dir) else "new"

    def _command(self, p: Point, resume: bool) -> list[str]:
        launch = ([sys.executable, "-m", "torch.distributed.run", *self.torchrun] if self.torchrun
                  else [sys.executable])
        return [*launch, "-m", "tokzoo.cli", "train", self.preset, *self.fixed, *p.overrides,
                f"run_dir={p.run_dir}", *(["--resume"] if resume else [])]

    def _train_one(self, p: Point) -> int:
        state = self._state(p)
        if state == "finished":
            return 0
        log = self._log(p.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.jobs > 1 and "OMP_NUM_THREADS" not in os.environ:  # points side by side share the cores
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.jobs))
        with open(log, "a") as f:
            f.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self._command(p, state == 'resume'))}\n")
            f.flush()
            proc = subprocess.Popen(self._command(p, state == "resume"), stdout=f, stderr=subprocess.STDOUT, env=env,
                                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
            try:
                return proc.wait()
            except BaseException:  # Ctrl-C / SIGTERM of the sweep: the point saves and stops too
                proc.send_signal(signal.SIGTERM)
                proc.wait()
                raise

    def _log(self, name: str) -> Path:
        return self.out / "logs" / (f"{name}.log" if not self.node_rank else f"{name}.node{self.node_rank}.log")

    def _train_all(self) -> dict[str, int]:
        todo = [p for p in self.points if self._state(p) != "finished"]
        done = len(self.points) - len(todo)
        if done:
            self.console.print(f"{done} of {len(self.points)} points already trained (skipped)", highlight=False)
        failed: dict[str, int] = {}
        # the points done of all, and under it each running point's last log line (its own progress)
        progress = Progress(TextColumn("[bold]training points"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("\n{task.fields[now]}"), console=self.console)
        with progress:
            task = progress.add_task("points", total=len(self.points), completed=done, now="")
            with ThreadPoolExecutor(max_workers=self.jobs) as pool:
                pending = {p.name: pool.submit(self._train_one, p) for p in todo}
                while pending:
                    finished = [name for name, fut in pending.items() if fut.done()]
                    if not finished:
                        now = [f"  {name}: {_last_line(self._log(name))[:60]}" for name in pending
                               if self._log(name).is_file()][:self.jobs]
                        progress.update(task, now=esc("\n".join(now), keep="\n"))
                        time.sleep(0.5)
                        continue
                    name = finished[0]
                    rc = pending.pop(name).result()
                    if rc != 0:
                        failed[name] = rc
                        progress.console.print(f"[red]{esc(name)}: training failed (exit {rc})[/], log: "
                                               f"{esc(self.out / 'logs' / (name + '.log'))}", highlight=False)
                    else:
                        progress.console.print(f"{esc(name)}: trained", highlight=False)
                    progress.advance(task)
            progress.update(task, now="")
        return failed

    def bench_options_for(self, points: list[Point]):
        """The bench options of the sweep's bench of ``points`` (into OUT, the swept values as columns)."""
        from dataclasses import replace

        return replace(self.bench_opts, tokenizers=[str(p.run_dir) for p in points], out_dir=str(self.out),
                       swept={str(p.run_dir): p.values for p in points})

    def _bench(self, points: list[Point]) -> dict[str, Any]:
        from tokzoo.bench.harness import Bench

        if not points:
            return {}
        return Bench(self.bench_options_for(points), self.console).run()
