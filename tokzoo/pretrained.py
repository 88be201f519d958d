"""Pretrained parts: required, never hoped for.

A component documented as pretrained (a semantic teacher, a vision tower, a
perceptual backbone) calls :func:`require_pretrained` with the value of its
weights parameter. It returns the file to load, or ``None`` when nothing must
be loaded:

- the value is ``random`` (:data:`RANDOM`): a deliberately random network,
  which is recorded in the run's config and flagged in every bench table;
- the component is being rebuilt to receive a tokzoo checkpoint's weights
  (inside :func:`restoring`): the checkpoint holds every tensor, so no
  external file is read.

An empty value or a missing file raises :class:`WeightsNotFoundError` naming
the parameter to set (its full config path, e.g. ``model.teacher.pretrained``)
and the file expected. A bare file name (``vq_ds16_c2i.pt``) is looked up in
the weight folders (``--weights-dir``, ``TOKZOO_WEIGHTS_DIR``, the torch hub
cache; :mod:`tokzoo.weights`). This module imports no other tokzoo module but
``errors`` and ``weights``.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from pathlib import Path
from typing import Any, Iterator

from tokzoo.errors import WeightsNotFoundError

#: the value of a weights parameter that asks for a deliberately random network
RANDOM = "random"

_restoring: contextvars.ContextVar[dict | None] = contextvars.ContextVar("tokzoo_restoring", default=None)
_recording: contextvars.ContextVar[dict | None] = contextvars.ContextVar("tokzoo_recording", default=None)
#: (config path, validated params) of the component whose factory is running (set by the registry)
_frame: contextvars.ContextVar[tuple[str, dict | None]] = contextvars.ContextVar("tokzoo_frame", default=("", None))


@contextlib.contextmanager
def restoring(references: dict[str, Any] | None = None) -> Iterator[None]:
    """Build components that will receive a tokzoo checkpoint's weights:
    pretrained files are not read, and the configs of checkpoints a component
    refers to come from ``references`` (recorded when the run was trained)."""
    token = _restoring.set(dict(references or {}))
    try:
        yield
    finally:
        _restoring.reset(token)


def is_restoring() -> bool:
    """True while components are rebuilt to receive a checkpoint's weights."""
    return _restoring.get() is not None


@contextlib.contextmanager
def recording_references() -> Iterator[dict[str, Any]]:
    """Collect the configs of the checkpoints components refer to while built
    (see :func:`referenced_config`), to be stored with a run's config."""
    refs: dict[str, Any] = {}
    token = _recording.set(refs)
    try:
        yield refs
    finally:
        _recording.reset(token)


def referenced_config(path: str, read) -> Any:
    """The config of the tokzoo checkpoint at ``path`` (read with ``read(path)``).

    While training it is read and recorded; while restoring it comes from the
    record, so a run folder rebuilds without the checkpoints it referred to."""
    restored = _restoring.get()
    if restored is not None and str(path) in restored:
        return restored[str(path)]
    config = read(path)
    recording = _recording.get()
    if recording is not None:
        recording[str(path)] = config
    return config


@contextlib.contextmanager
def building(path: str, params: dict | None) -> Iterator[None]:
    """The registry builds the component at config path ``path`` (``model.teacher``)
    with ``params`` (None while its spec is being resolved)."""
    token = _frame.set((path, params))
    try:
        yield
    finally:
        _frame.reset(token)


def current_frame() -> tuple[str, dict | None]:
    """(config path, params) of the component being built; ("", None) outside a build."""
    return _frame.get()


def current_spec_path() -> str:
    """The config path of the component being built (``model`` when unknown)."""
    return _frame.get()[0] or "model"


def require_pretrained(value: str, *, what: str, expected: str, param: str = "pretrained",
                       alternative: str = "") -> Path | None:
    """The weights file a pretrained component must load, or None (random by
    request, or restoring). ``what`` names the network, ``expected`` the file
    (e.g. "the open_clip checkpoint of ViT-L-16-SigLIP-256"); ``alternative``
    names another way to give it (e.g. "or set checkpoint=RUN")."""
    if is_restoring() or value == RANDOM:
        return None
    key = f"{current_spec_path()}.{param}"
    if not value:
        other = f" ({alternative})" if alternative else ""
        raise WeightsNotFoundError(
            f"{what} is a pretrained network, and no weights were given: set {key}=FILE, the local file of "
            f"{expected}{other}. Nothing is downloaded. To train on a deliberately random network, set "
            f"{key}={RANDOM} (recorded, and flagged in bench tables).")
    path = Path(value).expanduser()
    if not path.is_file() and os.sep not in value and not value.startswith("."):
        # a bare file name: looked up in the weight folders (--weights-dir, TOKZOO_WEIGHTS_DIR, torch hub)
        from tokzoo.weights import find_weights

        return find_weights(value, f"{key}: {what}")
    if not path.is_file():
        raise WeightsNotFoundError(f"{key}: {what} needs its weights file {path}, which does not exist "
                                   f"(expected: {expected}).")
    return path


def random_parts(spec: Any, where: str = "model") -> list[str]:
    """Config paths in ``spec`` whose weights parameter is ``random``."""
    found: list[str] = []
    if isinstance(spec, dict):
        for key, value in spec.items():
            if value == RANDOM and key in ("pretrained", "checkpoint", "weights"):
                found.append(where)
            elif isinstance(value, (dict, list)):
                found += random_parts(value, f"{where}.{key}")
    elif isinstance(spec, list):
        for i, value in enumerate(spec):
            found += random_parts(value, f"{where}.{i}")
    return found
