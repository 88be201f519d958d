"""Training: recipes (stages + losses), the generic trainer, checkpoints.
The names below are imported when first used (PEP 562), so the command line
refuses a bad command without importing torch."""

__all__ = ["Recipe", "Stage", "StepContext", "StepResult", "run_training"]


def run_training(*args, **kwargs):
    from tokzoo.train.trainer import run_training as _run

    return _run(*args, **kwargs)


def __getattr__(name: str):
    if name in ("Recipe", "Stage", "StepContext", "StepResult"):
        from tokzoo.train import recipe

        return getattr(recipe, name)
    raise AttributeError(f"module 'tokzoo.train' has no attribute '{name}'")
