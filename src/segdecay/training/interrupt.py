"""SIGINT/SIGTERM end a training run cleanly: after the current step, with a checkpoint.

Killing a run mid-step would lose everything since the last epoch; a scheduler's SIGTERM
(Slurm, Kubernetes, ``timeout``) or a Ctrl-C should instead cost nothing. While ``train``
runs, the two signals only set a flag; the loop checks it between steps, writes ``last.pt``
with its exact position inside the epoch, and raises :class:`TrainingInterrupted`. A second
Ctrl-C stops at once (the previous checkpoint stays valid: checkpoints are written
atomically).

The CLI maps :class:`TrainingInterrupted` to exit codes 130 (SIGINT) and 143 (SIGTERM).
"""

from __future__ import annotations

import functools
import shlex
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import torch

from segdecay.errors import UserError
from segdecay.training.hardware import oom_message


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after a finished step; ``--resume`` continues exactly.

    A ``KeyboardInterrupt`` so that code catching ``Exception`` (a tuner recording a failed
    trial) does not swallow the user's request to stop.
    """

    def __init__(self, signum: int, out: str, where: str, saved: bool,
                 resume_hint: str | None = None) -> None:
        self.signum = signum
        self.out = out
        self.where = where
        self.saved = saved
        self.resume_hint = resume_hint  # a command that continues (compare: rerun it)
        super().__init__(self.message)

    @property
    def signal_name(self) -> str:
        """SIGINT, SIGTERM, ..."""
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        """The shell convention 128 + signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum

    @property
    def message(self) -> str:
        """One line: what stopped, where, and how to go on."""
        if not self.saved:
            return (f"interrupted by {self.signal_name} {self.where}; no checkpoint "
                    "(checkpoints off)")
        hint = self.resume_hint or f"segdecay train --out {shlex.quote(self.out)} --resume"
        return (f"interrupted by {self.signal_name} {self.where}; checkpoint written; resume "
                f"with: {hint}")


class StopRequest:
    """Turns SIGINT and SIGTERM into a flag while active (main thread only; elsewhere a
    no-op, since Python delivers signals to the main thread)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: the user means now
        self.signum = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                try:
                    self._previous[sig] = signal.signal(sig, self._handle)
                except (ValueError, OSError):  # embedded interpreters may refuse
                    pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


_ACTIVE = threading.local()  # the StopRequest of the train() running in this thread


def active_stop() -> StopRequest:
    """The StopRequest of the ``stoppable`` call running in this thread (a fresh one if none)."""
    return getattr(_ACTIVE, "stop", None) or StopRequest()


def stoppable(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Run ``fn`` (``train``) with SIGINT/SIGTERM turned into a flag (:func:`active_stop`) that
    the loop checks between steps, and turn a CUDA out-of-memory error into a UserError that
    says what to change (raised outside the except block so the failed step's tensors are
    freed). ``fn``'s first argument is the TrainConfig."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
        outer = getattr(_ACTIVE, "stop", None)
        _ACTIVE.stop = StopRequest()
        try:
            with _ACTIVE.stop:
                return fn(*args, **kwargs)
        except torch.cuda.OutOfMemoryError:
            pass
        finally:
            _ACTIVE.stop = outer
        torch.cuda.empty_cache()
        raise UserError(oom_message(args[0] if args else kwargs["config"]))

    return wrapper
