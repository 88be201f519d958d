"""Locating pretrained weights on this machine (nothing is ever downloaded).

Files are looked up by their canonical file name, in order:

1. ``$TOKZOO_WEIGHTS_DIR`` (or ``--weights-dir``),
2. the torch hub cache, ``$TORCH_HOME/hub/checkpoints`` (default
   ``~/.cache/torch/hub/checkpoints``), where torchvision / torch-fidelity
   keep what they downloaded on a machine with internet.

A missing file raises :class:`WeightsNotFoundError` naming the file and both
places it may go.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import os
from pathlib import Path

from tokzoo.errors import WeightsNotFoundError

#: what each pretrained network needs, by canonical file name
KNOWN_FILES = {
    "alexnet": "alexnet-owt-7be5be79.pth",  # torchvision AlexNet (LPIPS backbone)
    "vgg16": "vgg16-397923af.pth",  # torchvision VGG16 (LPIPS-VGG backbone)
    "inception": "weights-inception-2015-12-05-6726825d.pth",  # FID Inception, 2015-12-05 weights (torch-fidelity's file)
}


def cache_dir() -> Path:
    """Where tokzoo keeps what it can rebuild (FID reference statistics, shard
    indexes): ``$TOKZOO_CACHE_DIR``, default ``~/.cache/tokzoo``."""
    return Path(os.environ.get("TOKZOO_CACHE_DIR") or Path.home() / ".cache" / "tokzoo")


def cache_folder(name: str) -> Path:
    """``cache_dir() / name``, made if missing and checked writable: called
    before the work whose result it will keep (training the AR probe's judge,
    Inception over the originals), so a ``TOKZOO_CACHE_DIR`` that is a file or
    read-only stops the bench at once with one clear message."""
    from tokzoo.errors import cannot_write

    folder = cache_dir() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise cannot_write(folder, exc, "tokzoo's cache folder ($TOKZOO_CACHE_DIR)") from None
    return folder


def hub_dir() -> Path:
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(torch_home) / "hub" / "checkpoints"


#: the ``--weights-dir`` of the command running (bench, import): components
#: built while it is set look their files up there first
_WEIGHTS_DIR: contextvars.ContextVar[str | None] = contextvars.ContextVar("tokzoo_weights_dir", default=None)


@contextlib.contextmanager
def using_weights_dir(weights_dir: str | os.PathLike | None):
    """Within the block, :func:`search_dirs` starts with ``weights_dir``."""
    token = _WEIGHTS_DIR.set(str(weights_dir) if weights_dir else None)
    try:
        yield
    finally:
        _WEIGHTS_DIR.reset(token)


def search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    dirs = []
    for d in (weights_dir, _WEIGHTS_DIR.get()):
        if d and Path(d) not in dirs:
            dirs.append(Path(d))
    if os.environ.get("TOKZOO_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["TOKZOO_WEIGHTS_DIR"]))
    dirs.append(hub_dir())
    return dirs


def find_weights(filename: str, purpose: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """Path of ``filename`` in the weight folders, or a clear error."""
    if os.sep in filename or filename.startswith("."):
        p = Path(filename).expanduser()
        if p.is_file():
            return p
        raise WeightsNotFoundError(f"{purpose} needs the weights file {p}, which does not exist.")
    dirs = search_dirs(weights_dir)
    for d in dirs:
        if (d / filename).is_file():
            return d / filename
    also = f"; also searched: {', '.join(str(d) for d in dirs[1:])}" if len(dirs) > 1 else ""
    raise WeightsNotFoundError(
        f"{purpose} needs the weights file '{filename}', which is not on this machine. "
        f"Put it in {dirs[0]} (or set TOKZOO_WEIGHTS_DIR to its folder){also}.")


@functools.lru_cache(maxsize=None)
def _sha256(path: str, mtime: float, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256(path: str | os.PathLike) -> str:
    st = os.stat(path)
    return _sha256(str(path), st.st_mtime, st.st_size)
