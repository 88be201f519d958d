"""The run-folder layout, known here alone.

::

    RUN/
      config.json              the run's config (written once the checks passed)
      checkpoints/<tag>/       one checkpoint each (model.safetensors, ...)
      checkpoints/latest       one line: the tag of the newest complete checkpoint
      checkpoints/finished     one line: the last stage's final tag, once every stage trained
      frozen/                  frozen parts, stored once and shared by every checkpoint
      .lock                    one writer at a time (:class:`tokzoo.ckptio.RunLock`)

Stage ``n`` (1-based) saves step checkpoints ``stage<n>-step<k>`` and ends
with ``stage<n>-final``. A leaf: it imports nothing of tokzoo.
"""
from __future__ import annotations

from pathlib import Path

CHECKPOINTS = "checkpoints"
LATEST = "latest"
FINISHED = "finished"
FROZEN = "frozen"
CONFIG = "config.json"


def checkpoints(run_dir: str | Path) -> Path:
    """The folder of a run's checkpoints."""
    return Path(run_dir) / CHECKPOINTS


def checkpoint(run_dir: str | Path, tag: str) -> Path:
    """The folder of the checkpoint ``tag``."""
    return checkpoints(run_dir) / tag


def latest_file(run_dir: str | Path) -> Path:
    return checkpoints(run_dir) / LATEST


def finished_file(run_dir: str | Path) -> Path:
    return checkpoints(run_dir) / FINISHED


def stage_tag(stage: int) -> str:
    """Stage ``stage`` (1-based)'s tag prefix: ``stage2``."""
    return f"stage{stage}"


def final_tag(stage: int) -> str:
    """The tag of stage ``stage`` (1-based)'s last checkpoint: ``stage2-final``."""
    return f"{stage_tag(stage)}-final"


def _line(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def latest_tag(run_dir: str | Path) -> str | None:
    """The tag ``latest`` names, or None before the first checkpoint."""
    return _line(latest_file(run_dir))


def finished_tag(run_dir: str | Path) -> str | None:
    """The final tag of a run whose every stage trained, or None."""
    return _line(finished_file(run_dir)) if finished_file(run_dir).is_file() else None


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether the folder holds a run with at least one published checkpoint."""
    return latest_file(run_dir).exists()


def looks_like_run(folder: str | Path) -> bool:
    """Whether ``folder`` already holds (part of) a run: never written over."""
    return checkpoints(folder).exists() or (Path(folder) / CONFIG).exists()
