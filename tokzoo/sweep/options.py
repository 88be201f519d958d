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

On a SLURM cluster: ``--launcher submitit`` (``pip install 'tokzoo[slurm]'``)
makes each point a job of ``--gpus-per-node`` tasks (one per GPU) on
``--nodes`` nodes, and the bench a job that runs after them; the command
returns once they are queued. ``tokzoo sweep --status OUT`` shows each point's
state, ``--cancel OUT`` cancels them, the same command again submits only what
is missing or failed. A time limit or a preemption saves the step and requeues
the job. ``--cluster local`` runs the same jobs on this machine (and waits).
See docs/cluster.md.

From a file: ``tokzoo sweep --config configs/sweeps/NAME.yaml`` takes the
preset, the grid words, out, jobs, torchrun and bench_args from it; a grid
word given on the command line replaces the file's word for the same key.

A swept key may carry a short alias for tables and folder names:
``m:model.sub_codebook_size=4,8,16``. A value in brackets is one value
(``model.ch_mult=[1,2],[1,2,2]`` sweeps two lists).
"""
# this module: the sweep file, the command line over it, the `tokzoo sweep` arguments
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


from tokzoo.cluster import add_cluster_args
from tokzoo.errors import ConfigError


#: the keys of a sweep file: the sweep's command-line arguments
SWEEP_KEYS = {"preset": str, "grid": list, "out": str, "jobs": int, "torchrun": str, "bench_args": str,
              "launcher": str, "submitit": dict}


def _grid_key(word: str) -> str:
    """The config key a grid word sets (``m:model.x=4,8`` -> ``model.x``)."""
    return word.split("=", 1)[0].rpartition(":")[2]


def read_sweep_file(path: str | Path) -> dict[str, Any]:
    """A sweep file -> the settings it gives, checked (ConfigError names the key)."""
    from tokzoo.config import read_experiment_file

    p = Path(path)
    data = read_experiment_file(p, SWEEP_KEYS, "sweep settings (preset, grid, out, jobs, torchrun, bench_args, "
                                               "launcher, submitit)")
    for key, value in data.items():
        want = SWEEP_KEYS[key]
        if key == "grid":
            if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
                raise ConfigError(f"--config {p}: 'grid' must be a list of words (key=a,b,c or key=v), "
                                  "quoted where YAML would read them otherwise")
        elif want is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"--config {p}: '{key}' must be an integer, not {value!r:.60}")
        elif want is str and not isinstance(value, str):
            raise ConfigError(f"--config {p}: '{key}' must be a string, not {value!r:.60}")
        elif want is dict and not isinstance(value, dict):
            raise ConfigError(f"--config {p}: '{key}' must be a mapping (partition: ..., gpus_per_node: ...), "
                              f"not {value!r:.60}")
    if data.get("launcher", "local") not in ("local", "submitit"):
        raise ConfigError(f"--config {p}: 'launcher' must be local or submitit, not {data['launcher']!r:.60}")
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
    s: dict[str, Any] = {"preset": None, "grid": [], "out": None, "jobs": 1, "torchrun": "", "bench_args": "",
                         "launcher": "local", "submitit": None}
    if given.get("config"):
        s.update(read_sweep_file(given["config"]))
    if name:
        s["preset"] = name
    mine = {_grid_key(w) for w in words}
    s["grid"] = [w for w in s["grid"] if _grid_key(w) not in mine] + words
    for key in ("out", "jobs", "torchrun", "bench_args", "launcher"):
        if key in given:
            s[key] = given[key]
    from tokzoo.cluster import cluster_flags_given, cluster_options

    cluster = None
    if s["launcher"] == "submitit":
        cluster = cluster_options(args, s["submitit"])
    elif cluster_flags_given(args) or s["submitit"]:
        what = cluster_flags_given(args)[0] if cluster_flags_given(args) else "the file's 'submitit:'"
        raise ConfigError(f"{what} is a cluster setting: add --launcher submitit (pip install 'tokzoo[slurm]')")
    if not s["preset"]:
        raise ConfigError("give the preset to sweep: tokzoo sweep PRESET key=a,b,c (or a --config file with "
                          "'preset:')")
    return {"preset": s["preset"], "words": s["grid"], "out": s["out"], "jobs": s["jobs"], "torchrun": s["torchrun"],
            "bench_args": s["bench_args"], "cluster": cluster}


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
    s.add_argument("--status", default=None, metavar="OUT", help="each point's state (done, running, queued, "
                                                                  "failed), its job and the log of each failure")
    s.add_argument("--cancel", default=None, metavar="OUT", help="cancel every job of the sweep in OUT still "
                                                                  "queued or running")
    add_cluster_args(s)
    s.add_argument("--bench-args", default=None, help="tokzoo bench options for the sweep's bench, e.g. "
                                                    "\"--num-images 256 --probe-train-images 512\"")
