"""What a job asks of the cluster: ``--launcher submitit`` and the SLURM settings,
from the command line (``tokzoo train`` / ``tokzoo sweep``) or a sweep file's
``submitit:`` mapping; checked before anything is submitted."""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field, fields
from typing import Any

from tokzoo.errors import ConfigError

#: where the jobs run: a SLURM cluster, or (submitit's own executors, on this machine) one
#: subprocess per task, or in this process (a quick test)
CLUSTERS = ("slurm", "local", "debug")
#: the job's time limit when none is given: a day (submitit's local default, 2 minutes, ends real work)
DEFAULT_TIME_MIN = 24 * 60
_SLURM_KEY = re.compile(r"[a-z][a-z0-9_-]{0,40}")


@dataclass
class ClusterOptions:
    """The resources of one job (every point of a sweep asks the same)."""

    cluster: str = "slurm"
    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    #: tasks (processes) per node: one per GPU; on CPUs, as given (default 1)
    tasks_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    #: the time limit in minutes; a job past it (or preempted) saves its step and requeues itself
    time: int = DEFAULT_TIME_MIN
    account: str | None = None
    qos: str | None = None
    #: further sbatch parameters, passed through (``--slurm constraint=a100``)
    slurm: dict[str, str] = field(default_factory=dict)
    #: how many times a job requeues itself after a time limit (preemptions do not count)
    max_requeues: int = 3

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)

    def check(self) -> "ClusterOptions":
        if self.cluster not in CLUSTERS:
            raise ConfigError(f"--cluster must be one of {', '.join(CLUSTERS)}, not {self.cluster!r:.60}")
        for name in ("nodes", "time"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number >= 1, not {value!r:.60}")
        for name in ("gpus_per_node", "max_requeues"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number >= 0, not {value!r:.60}")
        for name in ("tasks_per_node", "cpus_per_task"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number >= 1, not {value!r:.60}")
        if self.gpus_per_node and self.tasks_per_node not in (None, self.gpus_per_node):
            raise ConfigError(f"--tasks-per-node {self.tasks_per_node} with --gpus-per-node {self.gpus_per_node}: "
                              "tokzoo runs one task per GPU (leave --tasks-per-node out)")
        if self.mem_gb is not None and (isinstance(self.mem_gb, bool) or not isinstance(self.mem_gb, (int, float))
                                        or not self.mem_gb > 0):
            raise ConfigError(f"--mem-gb must be a positive number, not {self.mem_gb!r:.60}")
        for name in ("partition", "account", "qos"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not re.fullmatch(r"[\w.,:+-]{1,200}", value)):
                raise ConfigError(f"--{name} {value!r:.60} is not a SLURM name (letters, digits, . , : + - _)")
        if not isinstance(self.slurm, dict):
            raise ConfigError(f"'slurm' must be a mapping of sbatch parameters, not {self.slurm!r:.60}")
        for key, value in self.slurm.items():
            if not isinstance(key, str) or not _SLURM_KEY.fullmatch(key):
                raise ConfigError(f"--slurm {key!r:.60}: an sbatch parameter name (e.g. constraint, exclude, "
                                  "mail_user)")
            if not isinstance(value, (str, int, float)) or isinstance(value, bool) or any(c in str(value)
                                                                                          for c in "\n\r\0"):
                raise ConfigError(f"--slurm {key}: the value must be one line of text, not {value!r:.60}")
        if self.cluster != "slurm" and self.nodes > 1:
            raise ConfigError(f"--cluster {self.cluster} runs on this machine: --nodes must be 1")
        return self


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    """The cluster flags of ``tokzoo train`` and ``tokzoo sweep`` (defaults: None, so a
    sweep file's values are not overridden by what the command line left out)."""
    g = p.add_argument_group("on a cluster (--launcher submitit; pip install 'tokzoo[slurm]')")
    g.add_argument("--launcher", choices=["local", "submitit"], default=None,
                   help="local: this machine, as today (default); submitit: as cluster jobs")
    g.add_argument("--cluster", default=None, help="slurm (default), or local / debug: submitit's executors on "
                                                   "this machine (a subprocess per task / in this process)")
    g.add_argument("--partition", default=None, help="the SLURM partition")
    g.add_argument("--nodes", type=int, default=None, help="nodes per job (default 1)")
    g.add_argument("--gpus-per-node", type=int, default=None, help="GPUs per node; one task per GPU (default 0)")
    g.add_argument("--tasks-per-node", type=int, default=None, help="tasks per node on CPUs (default 1)")
    g.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per task")
    g.add_argument("--mem-gb", type=float, default=None, help="memory per node in GB")
    g.add_argument("--time", type=int, default=None, metavar="MIN",
                   help=f"time limit in minutes (default {DEFAULT_TIME_MIN}); the job saves and requeues itself")
    g.add_argument("--account", default=None, help="the SLURM account")
    g.add_argument("--qos", default=None, help="the SLURM QOS")
    g.add_argument("--slurm", action="append", default=None, metavar="KEY=VALUE",
                   help="another sbatch parameter, passed through (repeatable): --slurm constraint=a100")
    g.add_argument("--max-requeues", type=int, default=None, help="requeues after a time limit (default 3)")


def _pairs(words: list[str]) -> dict[str, str]:
    out = {}
    for w in words:
        key, eq, value = w.partition("=")
        if not eq or not key:
            raise ConfigError(f"--slurm {w!r:.60}: give KEY=VALUE (e.g. --slurm constraint=a100)")
        out[key.strip()] = value
    return out


def cluster_options(args: argparse.Namespace | None, given: dict[str, Any] | None = None) -> ClusterOptions:
    """The options: a sweep file's ``submitit:`` mapping (``given``), then the command line's flags."""
    names = {f.name for f in fields(ClusterOptions)}
    values: dict[str, Any] = {}
    if given:
        if not isinstance(given, dict):
            raise ConfigError(f"'submitit' must be a mapping of cluster settings, not {given!r:.60}")
        unknown = sorted(set(given) - names)
        if unknown:
            raise ConfigError(f"'submitit' has no setting {unknown[0]!r:.60} (it takes: {', '.join(sorted(names))})")
        values.update(given)
    if args is not None:
        for name in names:
            value = getattr(args, name, None)
            if value is not None:
                values[name] = _pairs(value) if name == "slurm" else value
    return ClusterOptions(**values).check()


def cluster_flags_given(args: argparse.Namespace) -> list[str]:
    """The cluster flags given on the command line (refused without ``--launcher submitit``)."""
    names = [f.name for f in fields(ClusterOptions)]
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n, None) is not None]
