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
import uuid
from pathlib import Path

from tokzoo.errors import CheckpointError, cannot_write

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
    """``FOLDER/.tokzoo.lock``: one writer per run or results folder. The
    holder keeps an exclusive ``flock`` on the file (the kernel drops it when
    the process ends, however it ends) and writes its pid, host and command
    into it for the message a second writer gets. A lock file nobody holds is
    left by a process that is gone, and is simply taken. On a file system
    without ``flock`` the file's pid decides (a dead pid of this host is
    stale), and a takeover is itself exclusive, so two writers never both
    take one stale lock."""

    NAME = ".tokzoo.lock"

    def __init__(self, folder: str | Path, what: str = "run folder"):
        self.path, self.what, self.held = Path(folder) / self.NAME, what, False
        self._fd: int | None = None

    def _me(self) -> bytes:
        import socket
        import sys
        import time

        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                           "command": " ".join(["tokzoo", *sys.argv[1:]])[:300]}).encode()

    def _holder(self) -> dict:
        try:
            holder = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _busy(self, holder: dict) -> RunLocked:
        return RunLocked(
            f"{self.path.parent} is in use by another tokzoo process (pid {holder.get('pid')} on "
            f"{holder.get('host')}, since {holder.get('since')}: {holder.get('command', '?')}). "
            f"Wait for it to finish; if that process is gone, remove {self.path}.")

    def acquire(self) -> "RunLock":
        import fcntl
        import time

        for _ in range(50):
            try:  # the folder made if missing; a read-only or unwritable one: one message (exit 2)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            except OSError as exc:
                raise cannot_write(self.path.parent, exc, f"the {self.what}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = self._holder()
                if holder:
                    raise self._busy(holder) from None
                time.sleep(0.05)  # its holder took it this instant and is writing its name
                continue
            except OSError:  # no flock on this file system (some network mounts)
                os.close(fd)
                return self._acquire_by_pid()
            try:  # released (unlinked) and made anew between our open and our flock: lock the new file
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(fd).st_ino:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, self._me())
            self._fd, self.held = fd, True
            return self
        raise RunLocked(f"cannot take the lock {self.path} of this {self.what}; remove it if no tokzoo runs there")

    def _acquire_by_pid(self) -> "RunLock":
        import socket
        import time

        me = self._me()
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
                        and not _alive(holder["pid"]):
                    self._take_over_stale(holder)
                    continue
                if not holder:  # being written by its holder this instant, or unreadable
                    time.sleep(0.2)
                    continue
                raise self._busy(holder) from None
            with os.fdopen(fd, "wb") as f:
                f.write(me)
            self.held = True
            return self
        raise RunLocked(f"cannot take the lock {self.path} of this {self.what}; remove it if no tokzoo runs there")

    def _take_over_stale(self, holder: dict) -> None:
        """Remove the stale lock ``holder`` named, only if it is still that one, and only one
        process at a time (``.tokzoo.lock.takeover``, made exclusively): another writer cannot
        remove a lock just taken in its place."""
        guard = self.path.with_name(self.NAME + ".takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            import time

            time.sleep(0.1)
            return
        try:
            if self._holder() == holder:
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)
            guard.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)  # while still held: a waiter then finds its file gone
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
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


# -- every file written for a user -------------------------------------------------------------
#: the temporary files atomic_write leaves only when killed mid-write: ``.NAME.8HEX.tmp``
TEMP_FILE = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{8}\.tmp")


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the whole new
    one, never half: a temporary file in the same folder, fsynced, then renamed.
    A full disk, a read-only or unwritable folder or a file in the way raise one
    :class:`~tokzoo.errors.OutputError` naming ``path`` (exit 2), and no partial
    file stays. Every file tokzoo writes for a user goes through here."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise cannot_write(path, exc) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
