"""``tokzoo sweep``: train and bench every point of a grid; rooms: grid (the
words -> points), options (a sweep file, the command line; what a sweep does,
in full, is its docstring: ``tokzoo sweep --help``), run (training, resuming,
the bench), jobs (each point a cluster job through submitit). ``Sweep`` and ``SweepFailed`` are imported when first used, so
the command line's parser (``sweep_parser``) does not import torch."""
from tokzoo.sweep.grid import Axis, Point, grid_points, parse_grid, split_values
from tokzoo.sweep.options import read_sweep_file, sweep_parser, sweep_settings

__all__ = ["Axis", "Point", "Sweep", "SweepFailed", "grid_points", "parse_grid", "read_sweep_file", "split_values",
           "sweep_parser", "sweep_settings"]


def __getattr__(name: str):
    if name in ("Sweep", "SweepFailed"):
        from tokzoo.sweep import run

        return getattr(run, name)
    raise AttributeError(f"module 'tokzoo.sweep' has no attribute '{name}'")
