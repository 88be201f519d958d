"""Core's benchmark metrics, registered through the same hook as any plugin's."""
from __future__ import annotations

from tokzoo import hookimpl


@hookimpl
def tokzoo_register_metrics(register):
    from tokzoo.bench.metrics import CORE_METRICS

    for name, (cls, description) in CORE_METRICS.items():
        register(name, cls, description)
