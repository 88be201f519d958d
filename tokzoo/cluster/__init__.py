"""Trainings and sweeps as cluster jobs through submitit (SLURM; submitit's local
and debug executors run the same jobs on one machine). submitit is an optional
extra (``pip install 'tokzoo[slurm]'``), imported only when a job is submitted."""
from __future__ import annotations

from tokzoo.cluster.options import ClusterOptions, add_cluster_args, cluster_flags_given, cluster_options

__all__ = ["ClusterOptions", "add_cluster_args", "cluster_flags_given", "cluster_options"]
