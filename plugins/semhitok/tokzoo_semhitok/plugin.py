"""Entry point of tokzoo-semhitok: registers its components with tokzoo."""
from pathlib import Path

import tokzoo


@tokzoo.hookimpl
def tokzoo_register_presets(register):
    register("semhitok", Path(__file__).parent / "configs")
