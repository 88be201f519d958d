"""Core's presets (``vq-tiny``, ``clip``): the YAML files of this folder, shipped
in the wheel and registered through the same hook as any plugin's presets."""
from __future__ import annotations

from pathlib import Path

from tokzoo import hookimpl


@hookimpl
def tokzoo_register_presets(register):
    register("tokzoo", Path(__file__).parent)
