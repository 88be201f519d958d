"""``tokzoo sweep PRESET key=a,b [key2=x,y]``: train and bench every point of a grid.

Every point is one ``tokzoo train PRESET key=a key2=x run_dir=OUT/points/NAME``
(a subprocess, as a user would type it; ``--torchrun ARGS`` launches it
through ``torch.distributed.run``), then one bench of all points under one
protocol into ``OUT/results.json``, each entry carrying its swept values
(``swept``), which every table shows as columns.

Resumable: ``OUT/sweep.json`` records the grid; running the same command
again skips every point whose run has finished (``checkpoints/finished``),
resumes a point that was interrupted (``--resume``), and reuses every bench
result already measured. A different grid into the same ``OUT`` is refused.
A point's training is stopped with SIGTERM (it saves and exits) if the
sweep process dies (Linux), so a killed sweep leaves no orphan holding a
run folder's lock.

Across machines: every machine runs the same ``tokzoo sweep`` command over
one shared ``--out`` folder, its own ``--node_rank`` in ``--torchrun``
(``"--nnodes 2 --node_rank 1 --nproc_per_node 8 --master_addr HOST0
--master_port 29500"``). Machines of rank > 0 only join each point's
training, in the grid's order; machine 0 keeps the sweep's lock, skips and
resumes points, and benches.

A swept key may carry a short alias for tables and folder names:
``m:model.sub_codebook_size=4,8,16``. A value in brackets is one value
(``model.ch_mult=[1,2],[1,2,2]`` sweeps two lists).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tokzoo import runfolder
from tokzoo.ckptio import RunLock, atomic_write
from tokzoo.errors import ConfigError, TokzooError


class SweepFailed(TokzooError):
    """Some points could not be trained (the others were benched)."""

    exit_code = 1


@dataclass
class Axis:
    alias: str
    key: str
    values: list[str]


@dataclass
class Point:
    name: str
    values: dict[str, Any]  # alias -> value (parsed as YAML: 4 -> int)
    overrides: list[str]  # key=value, one per axis
    run_dir: Path = field(default=Path())


def split_values(text: str) -> list[str]:
    """``"a,b,[1,2]"`` -> ``["a", "b", "[1,2]"]``: commas inside brackets or braces stay."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v.strip() for v in out]


def parse_grid(args: list[str]) -> tuple[list[Axis], list[str]]:
    """Command-line ``key=...`` words -> (swept axes, fixed overrides)."""
    axes, fixed = [], []
    for word in args:
        if "=" not in word:
            raise ConfigError(f"'{word}' is not key=value or key=a,b,c (e.g. model.sub_codebook_size=4,8)")
        key, text = word.split("=", 1)
        values = split_values(text)
        alias, _, real = key.rpartition(":")
        alias, key = (alias or real.rsplit(".", 1)[-1]), real
        if not key or any(v == "" for v in values):
            raise ConfigError(f"'{word}': an empty key or value")
        if len(values) == 1:
            fixed.append(f"{key}={values[0]}")
            continue
        if len(set(values)) != len(values):
            raise ConfigError(f"'{word}' names a value twice")
        if alias in {a.alias for a in axes}:
            raise ConfigError(f"two swept keys are both called '{alias}': give one an alias (alias:{key}=...)")
        axes.append(Axis(alias, key, values))
    if not axes:
        raise ConfigError("nothing to sweep: give at least one key with two or more values, e.g. "
                          "model.sub_codebook_size=4,8,16")
    return axes, fixed


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9=._-]+", "", text.replace("/", "-"))[:60] or "x"


def grid_points(axes: list[Axis]) -> list[Point]:
    points, seen = [], set()
    for combo in itertools.product(*[a.values for a in axes]):
        name = ",".join(_safe(f"{a.alias}={v}") for a, v in zip(axes, combo))
        if name in seen:
            name = f"{name},{len(points)}"
        seen.add(name)
        values = {a.alias: _yaml_value(v) for a, v in zip(axes, combo)}
        points.append(Point(name, values, [f"{a.key}={v}" for a, v in zip(axes, combo)]))
    return points


def _yaml_value(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, str, bool, list)) else text


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
    """The last line a failed training printed (its error message)."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "?"
    return lines[-1][:300] if lines else "?"


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the sweep process dies (Linux), so the
    trainer saves its step and exits instead of running on as an orphan."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Sweep:
    def __init__(self, preset: str, words: list[str], out: str | None, jobs: int = 1, torchrun: str = "",
                 bench_args: str = "", console: Console | None = None):
        from tokzoo.config import load_preset

        if jobs < 1:
            raise ConfigError(f"--jobs must be a positive integer, not {jobs}")
        load_preset(preset)  # an unknown preset fails now, with its closest names
        self.preset, self.jobs, self.console = preset, jobs, console or Console()
        self.axes, self.fixed = parse_grid(words)
        self.points = grid_points(self.axes)
        self.out = Path(out or Path("runs") / f"sweep-{preset}")
        self.torchrun = shlex.split(torchrun)
        self.node_rank = _node_rank(self.torchrun)
        if self.node_rank and jobs > 1:
            raise ConfigError("--jobs must be 1 when points span machines (every machine trains the points in "
                              "the grid's order)")
        self.bench_args = shlex.split(bench_args)
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
        for key in ("preset", "axes", "fixed", "bench_args"):
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
        log = self.out / "logs" / (f"{p.name}.log" if not self.node_rank else f"{p.name}.node{self.node_rank}.log")
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

    def _train_all(self) -> dict[str, int]:
        todo = [p for p in self.points if self._state(p) != "finished"]
        done = len(self.points) - len(todo)
        if done:
            self.console.print(f"{done} of {len(self.points)} points already trained (skipped)", highlight=False)
        failed: dict[str, int] = {}
        progress = Progress(TextColumn("[bold]training points"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=self.console)
        with progress:
            task = progress.add_task("points", total=len(self.points), completed=done)
            with ThreadPoolExecutor(max_workers=self.jobs) as pool:
                futures = {p.name: pool.submit(self._train_one, p) for p in todo}
                for name, fut in futures.items():
                    rc = fut.result()
                    if rc != 0:
                        failed[name] = rc
                        progress.console.print(f"[red]{name}: training failed (exit {rc})[/], log: "
                                               f"{self.out / 'logs' / (name + '.log')}", highlight=False)
                    else:
                        progress.console.print(f"{name}: trained", highlight=False)
                    progress.advance(task)
        return failed

    def _bench(self, points: list[Point]) -> dict[str, Any]:
        from dataclasses import replace

        from tokzoo.bench.harness import Bench

        if not points:
            return {}
        opts = replace(self.bench_opts, tokenizers=[str(p.run_dir) for p in points], out_dir=str(self.out),
                       swept={str(p.run_dir): p.values for p in points})  # the swept values, as columns
        return Bench(opts, self.console).run()


# -- a sweep file (``tokzoo sweep --config FILE``) ---------------------------------------------
#: the keys of a sweep file: the sweep's command-line arguments
SWEEP_KEYS = {"preset": str, "grid": list, "out": str, "jobs": int, "torchrun": str, "bench_args": str}


def _grid_key(word: str) -> str:
    """The config key a grid word sets (``m:model.x=4,8`` -> ``model.x``)."""
    return word.split("=", 1)[0].rpartition(":")[2]


def read_sweep_file(path: str | Path) -> dict[str, Any]:
    """A sweep file -> the settings it gives, checked (ConfigError names the key)."""
    from tokzoo.errors import closest

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config {p}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"--config {p}: not a readable YAML file ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {p}: expected a mapping (preset, grid, out, jobs, torchrun, bench_args)")
    for key, value in data.items():
        if key not in SWEEP_KEYS:
            hint = closest(str(key), SWEEP_KEYS)
            raise ConfigError(f"--config {p}: unknown key '{key}'" + (f": did you mean '{hint}'?" if hint else "")
                              + f" Valid keys: {', '.join(SWEEP_KEYS)}")
        want = SWEEP_KEYS[key]
        if key == "grid":
            if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
                raise ConfigError(f"--config {p}: 'grid' must be a list of words (key=a,b,c or key=v), "
                                  "quoted where YAML would read them otherwise")
        elif want is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"--config {p}: '{key}' must be an integer, not {value!r}")
        elif want is str and not isinstance(value, str):
            raise ConfigError(f"--config {p}: '{key}' must be a string, not {value!r}")
    return data


def sweep_settings(args) -> dict[str, Any]:
    """Parsed ``tokzoo sweep`` arguments -> :class:`Sweep`'s keyword arguments:
    the ``--config`` file's, then what the command line gives (a grid word
    replaces the file's word for the same key)."""
    given = {k: v for k, v in vars(args).items() if v is not None}
    words = list(given.get("grid") or [])
    name = given.get("name")
    if name and "=" in name:  # `tokzoo sweep --config FILE key=a,b`: a grid word, not a preset
        words, name = [name, *words], None
    s: dict[str, Any] = {"preset": None, "grid": [], "out": None, "jobs": 1, "torchrun": "", "bench_args": ""}
    if given.get("config"):
        s.update(read_sweep_file(given["config"]))
    if name:
        s["preset"] = name
    mine = {_grid_key(w) for w in words}
    s["grid"] = [w for w in s["grid"] if _grid_key(w) not in mine] + words
    for key in ("out", "jobs", "torchrun", "bench_args"):
        if key in given:
            s[key] = given[key]
    if not s["preset"]:
        raise ConfigError("give the preset to sweep: tokzoo sweep PRESET key=a,b,c (or a --config file with "
                          "'preset:')")
    return {"preset": s["preset"], "words": s["grid"], "out": s["out"], "jobs": s["jobs"], "torchrun": s["torchrun"],
            "bench_args": s["bench_args"]}


def sweep_parser(sub) -> None:
    s = sub.add_parser("sweep", help="train and bench every point of a grid: "
                                     "tokzoo sweep semhitok-tiny m:model.sub_codebook_size=4,8,16",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("name", nargs="?", help="preset name (see `tokzoo list preset`) or a YAML file")
    s.add_argument("grid", nargs="*", help="key=a,b,c to sweep ([alias:]key), key=v to fix")
    s.add_argument("--config", default=None, metavar="FILE",
                   help="a sweep file (YAML: preset, grid, out, jobs, torchrun, bench_args); what the command "
                        "line gives overrides it, a grid word replacing the file's word for the same key")
    s.add_argument("--out", default=None, help="the sweep folder (default runs/sweep-PRESET)")
    s.add_argument("--jobs", type=int, default=None, help="points trained side by side (worker processes; default 1)")
    s.add_argument("--torchrun", default=None, help="launch each point with torch.distributed.run and these "
                                                    "arguments, e.g. \"--nproc_per_node 4\"")
    s.add_argument("--bench-args", default=None, help="tokzoo bench options for the sweep's bench, e.g. "
                                                    "\"--num-images 256 --probe-train-images 512\"")
