"""User-facing errors.

Every error a user can cause (a typo in a name, a bad config key, a broken
checkpoint, a broken plugin) is a :class:`TokzooError`. The CLI prints its
message without a traceback and exits with its ``exit_code``.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class TokzooError(Exception):
    """An error caused by user input, reported without a traceback."""

    exit_code = 2


class UnknownNameError(TokzooError, KeyError):
    """A name that the registry (or a preset folder) does not hold."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        valid = sorted(valid)
        self.kind, self.name, self.valid = kind, name, valid
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
        msg = f"unknown {kind} '{name}'."
        if close:
            msg += " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
        msg += "\nValid " + kind + " names: " + (", ".join(valid) if valid else "(none registered)")
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ConfigError(TokzooError):
    """A config key that does not exist, a wrong type, or a missing value."""


class PluginError(TokzooError):
    """A plugin that registers a clashing name or breaks a hook."""


class DataError(TokzooError):
    """A dataset that cannot be read at all (no images, missing folder)."""


class CheckpointError(TokzooError):
    """A checkpoint that is missing, corrupt, or does not fit the model."""


class OutputError(TokzooError):
    """A file tokzoo must write that cannot be written: a full disk, a read-only or missing folder."""


#: errno values that mean the device is full (ENOSPC, EDQUOT)
FULL = (28, 122)


def is_full_disk(exc: BaseException) -> bool:
    """Whether ``exc`` (an OSError, or a library's wrapper of one: safetensors' SafetensorError,
    torch.save's RuntimeError) says the device is full."""
    if isinstance(exc, OSError):
        return exc.errno in FULL
    text = str(exc)
    return any(s in text for s in ("No space left", "StorageFull", "code: 28", "Disk quota"))


def cannot_write(path, exc: BaseException, what: str = "") -> OutputError:
    """One clear message for a write that failed, naming the file and why (a full disk with the space
    left, a read-only file system, no permission, a missing folder or a file in the way)."""
    import errno
    import os
    import shutil

    where = f"{what} {path}".strip()
    if is_full_disk(exc):
        probe = next((str(p) for p in (path, os.path.dirname(str(path)) or ".") if os.path.exists(p)), ".")
        try:
            free = f"; {shutil.disk_usage(probe).free / 2 ** 20:,.0f} MB are free there"
        except OSError:
            free = ""
        why = f"no space left on its device{free}. Free space and run it again"
    elif isinstance(exc, OSError) and exc.errno == errno.EROFS:
        why = "the file system is read-only. Choose a folder you can write to"
    elif isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        why = "permission denied. Choose a folder you can write to"
    elif isinstance(exc, OSError) and exc.errno == errno.ENOENT:
        why = "its folder does not exist"
    elif isinstance(exc, OSError) and exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
        why = "a file or folder of that name is in the way"
    else:
        why = getattr(exc, "strerror", None) or str(exc)
    return OutputError(f"cannot write {where}: {why}")


class WeightsNotFoundError(TokzooError):
    """A pretrained weights file that is not on this machine."""


class ContractError(TokzooError):
    """A component (often a plugin's) that broke the contract of :mod:`tokzoo.api` at run time."""

    exit_code = 3


def who(component) -> str:
    """``quantizer 'lfq' (plugin 'lfq', distribution 'tokzoo-lfq 0.3.0')`` for a registry-built component."""
    info = getattr(component, "tokzoo_component", None)
    if not isinstance(info, dict):
        return type(component).__name__
    return (f"{info['kind']} '{info['name']}' (plugin '{info['plugin']}', distribution "
            f"'{info['distribution']} {info['version']}')")


def check_returns(component, method: str, value, expected: type, what: str):
    """``value`` if it is an ``expected``, else a :class:`ContractError` naming the component."""
    if not isinstance(value, expected):
        raise ContractError(f"{who(component)}: {method}() returned {type(value).__name__}, but the contract "
                            f"expects {what}")
    return value


class CodesError(ContractError, ValueError):
    """:class:`~tokzoo.codes.Codes` or a ``CodeSpec`` built against its rules (a level of the wrong rank,
    levels that disagree): a contract breach (exit 3), also a ValueError for code that caught one."""


class NotAvailableError(TokzooError):
    """A feature that is not built yet."""


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The closest valid spelling of ``name``, or None."""
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return match[0] if match else None


def unreadable(file, exc: BaseException, kind: str = "a safetensors file") -> CheckpointError:
    """Why a checkpoint file could not be read, told apart: no permission (the file may be
    fine), metadata that is not UTF-8 text, or a damaged file."""
    text = (str(exc).splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, PermissionError) or "Permission denied" in text or "os error 13" in text:
        return CheckpointError(f"{file} cannot be read: permission denied (give this user read access; "
                               "the file itself may be intact)")
    if isinstance(exc, UnicodeError) or "utf-8" in text.lower() or "utf8" in text.lower():
        return CheckpointError(f"{file} holds text that is not UTF-8 ({text}): it was not written by tokzoo, "
                               "or was damaged")
    return CheckpointError(f"{file} is corrupt or not {kind} ({text})")
