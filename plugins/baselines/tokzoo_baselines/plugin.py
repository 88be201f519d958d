"""Entry point of tokzoo-baselines: registers its components with tokzoo."""
from pathlib import Path

import tokzoo


@tokzoo.hookimpl
def tokzoo_register_presets(register):
    register("baselines", Path(__file__).parent / "configs")
