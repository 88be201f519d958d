"""Devices and torch.distributed: shared by the trainer and the bench harness."""
from __future__ import annotations

import contextlib
import os
import re
from typing import Any

import torch
import torch.distributed as dist

from tokzoo.errors import ConfigError


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def maybe_init_distributed(device: torch.device) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


#: what a device may be called wherever one is given (trainer.device, bench --device)
DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")


def check_device_name(name: Any, what: str = "device") -> str:
    """``name`` if it names a device kind tokzoo runs on (``auto``, ``cpu``,
    ``cuda``, ``cuda:N``, ``mps``); a ConfigError naming the choices otherwise.
    Whether this machine has it is :func:`pick_device`'s question."""
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
        raise ConfigError(f"{what} {name!r:.60} is not a device tokzoo runs on: auto, cpu, cuda, cuda:N or mps")
    return name


def pick_device(name: str) -> torch.device:
    name = check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name} but no CUDA device is available here; available: cpu")
        index = int(name[5:]) if ":" in name else int(os.environ.get("LOCAL_RANK", "0"))
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if name.startswith("mps") and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device={name} but no Apple MPS device is available here; available: "
                          + ", ".join(["cpu"] + (["cuda"] if torch.cuda.is_available() else [])))
    return torch.device(name)


def free_memory(device: torch.device) -> int | None:
    """Bytes free now for tensors on ``device`` (CUDA: the device's free memory;
    CPU: the system's available memory), or None where it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def average_gradients(module: torch.nn.Module | None, world: int) -> None:
    """Under torch.distributed, average ``module``'s gradients over the ranks as one
    flat bucket (one all-reduce; for a module not wrapped in DDP, e.g. a discriminator)."""
    if world == 1 or module is None:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if grads:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))


# -- precision of a measurement ------------------------------------------------------------------
def autocast_to(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``'s type (nothing when None)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@contextlib.contextmanager
def tf32(device: torch.device, on: bool):
    """TF32 matmuls and convolutions on (or off) while measuring on a CUDA device; as before afterwards."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
