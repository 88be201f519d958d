"""Ctrl-C and SIGTERM during training: noted, never acted on mid-step; the
loop asks after each step, every rank agreeing, then saves and stops."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

import torch
import torch.distributed as dist

from tokzoo.errors import TokzooError


class TrainingInterrupted(TokzooError):
    """Ctrl-C or SIGTERM: a checkpoint was saved at the current step."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


#: the stop signals being listened to now (a training loop inside :meth:`StopSignals.caught`)
_LISTENING: list["StopSignals"] = []


def request_stop(signum: int) -> bool:
    """Ask the running training loop to save and stop after its step, as if sent ``signum``
    (a cluster job's time limit); False when no training loop is listening."""
    if not _LISTENING:
        return False
    _LISTENING[-1].signum = signum
    return True


class StopSignals:
    def __init__(self):
        self.signum = 0

    @contextlib.contextmanager
    def caught(self) -> Iterator["StopSignals"]:
        """SIGINT and SIGTERM are recorded while inside (main thread only)."""
        self.signum = 0
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            self.signum = signum
        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        _LISTENING.append(self)
        try:
            yield self
        finally:
            _LISTENING.remove(self)
            for sig, h in old.items():
                signal.signal(sig, h)

    def requested(self, world: int, device: torch.device, collective: bool = True) -> bool:
        """Whether any rank was signalled. Under ``torchrun`` a collective, asked
        only where ``collective`` (the log lines: it reads a device value), so
        every rank stops after the same step; alone, the flag itself, every step."""
        flag = self.signum
        if world > 1:
            if not collective:
                return False
            t = torch.tensor([flag], dtype=torch.long, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = int(t)
        self.signum = flag
        return bool(flag)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name
