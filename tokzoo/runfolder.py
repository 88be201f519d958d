"""The run-folder layout, known here alone.

::

    RUN/
      config.json              the run's config (written once the checks passed)
      checkpoints/<tag>/       one checkpoint each (model.safetensors, ...)
      checkpoints/latest       one line: the tag of the newest complete checkpoint
      checkpoints/finished     one line: the last stage's final tag, once every stage trained
      frozen/                  frozen parts, stored once and shared by every checkpoint
      .tokzoo.lock             one writer at a time (:class:`RunLock`; results and sweep folders too)

A checkpoint is published in one step: written under a temporary name,
``.complete`` last, then renamed into place and named by ``latest``. Step
checkpoints are ``step-<global step>``; stage ``n`` (1-based) ends with
``stage<n>-final``. Below everything but :mod:`tokzoo.errors`.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tokzoo.errors import CheckpointError

CHECKPOINTS = "checkpoints"
LATEST = "latest"
FINISHED = "finished"
FROZEN = "frozen"
CONFIG = "config.json"
#: written last into a checkpoint folder: everything before it is on disk
COMPLETE = ".complete"
TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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


def check_output_folder(folder: str | Path, what: str) -> None:
    """Refuse (ConfigError, exit 2) an output folder that is an existing file,
    the file system's root or the working folder itself (where tokzoo would
    write its files among the user's), before anything is written."""
    from tokzoo.errors import ConfigError

    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is an existing file, not a folder (nothing was changed)")
    resolved = path.resolve()
    if resolved == Path(resolved.anchor):
        raise ConfigError(f"{what} {path} is the file system's root; give a folder of its own (nothing was changed)")
    if resolved == Path.cwd().resolve():
        raise ConfigError(f"{what} {path} is the working folder itself; give a folder of its own, e.g. "
                          f"runs/NAME (nothing was changed)")


# -- one writer at a time ---------------------------------------------------------------------
class RunLocked(CheckpointError):
    """Another process holds the folder's lock."""

    exit_code = 2


class RunLock:
    """``FOLDER/.tokzoo.lock``: one writer per run or results folder. Holds the
    holder's pid, host and command; a lock whose process is gone (same host)
    is stale and taken over."""

    NAME = ".tokzoo.lock"

    def __init__(self, folder: str | Path, what: str = "run folder"):
        self.path, self.what, self.held = Path(folder) / self.NAME, what, False

    def acquire(self) -> "RunLock":
        import socket
        import sys
        import time

        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(["tokzoo", *sys.argv[1:]])[:300]}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text() or "{}")
                except (OSError, ValueError):
                    holder = {}
                if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) \
                        and not _alive(holder["pid"]):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                if not holder:  # being written by its holder this instant, or unreadable
                    time.sleep(0.2)
                    continue
                raise RunLocked(
                    f"{self.path.parent} is in use by another tokzoo process (pid {holder.get('pid')} on "
                    f"{holder.get('host')}, since {holder.get('since')}: {holder.get('command', '?')}). "
                    f"Wait for it to finish; if that process is gone, remove {self.path}.")
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            self.held = True
            return self
        raise RunLocked(f"cannot take the lock {self.path} of this {self.what}; remove it if no tokzoo runs there")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stranded(ckpt_root: Path, tag: str) -> Path | None:
    """A complete checkpoint ``tag`` left under a temporary name by a kill
    between the two renames of a replaced tag (the new one first)."""
    for pattern in (f".tmp-{tag}-*", f".old-{tag}-*"):
        for cand in sorted(ckpt_root.glob(pattern)):
            if (cand / COMPLETE).is_file() and (cand / "model.safetensors").is_file():
                return cand
    return None


def repair_latest(run_dir: str | Path) -> str | None:
    """Put a stranded checkpoint back under the name ``latest`` gives it (a
    writer calls this, holding the run's lock); the tag restored, or None."""
    ckpt_root = checkpoints(run_dir)
    latest = ckpt_root / LATEST
    if not latest.is_file():
        return None
    tag = latest.read_text().strip()
    if not TAG.fullmatch(tag) or (ckpt_root / tag / "model.safetensors").is_file():
        return None
    cand = stranded(ckpt_root, tag)
    if cand is None:
        return None
    os.replace(cand, ckpt_root / tag)
    return tag
