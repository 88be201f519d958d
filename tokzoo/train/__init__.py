"""Training: recipes (stages + losses), the generic trainer, checkpoints."""
from tokzoo.train.recipe import Recipe, Stage, StepContext, StepResult

__all__ = ["Recipe", "Stage", "StepContext", "StepResult", "run_training"]


def run_training(*args, **kwargs):
    from tokzoo.train.trainer import run_training as _run

    return _run(*args, **kwargs)
