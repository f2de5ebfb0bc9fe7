"""Ctrl-C (or SIGTERM) during training: end the epoch under way, keep a checkpoint of it, then stop.

An epoch changes the heads and the optimiser batch by batch, so a state taken in the middle of one
could not be resumed to the result an uninterrupted run gives. The loop instead notes the signal,
finishes the epoch, writes its checkpoint and raises :class:`TrainingInterrupted`. A second signal
stops at once: the last checkpoint stays, the epochs after it are lost. Signals reach Python's main
thread only, so elsewhere (and where the signal is ignored) nothing changes.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_NOTICE = b"\nfinishing this epoch to keep a checkpoint of it (press Ctrl-C again to stop at once)\n"


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by a signal. ``kept``: the epoch of the phase's checkpoint (None: none yet);
    ``epoch``: the epoch reached (the one under way when the stop was immediate)."""

    def __init__(self, out: Path, phase: str, epoch: int, epochs: int, kept: int | None, signum: int) -> None:
        super().__init__(out, phase, epoch, epochs, kept, signum)
        self.out, self.phase, self.epoch, self.epochs, self.kept, self.signum = (
            out,
            phase,
            epoch,
            epochs,
            kept,
            signum,
        )

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended: 130 after Ctrl-C."""
        return 128 + self.signum

    def __str__(self) -> str:
        where = "in the refit " if self.phase == "refit" else ""
        again = "run the same command again to go on"
        if self.kept is not None and self.kept == self.epoch:
            return f"interrupted {where}at epoch {self.epoch} of {self.epochs}: checkpoint kept in {self.out}; {again}"
        at = f"during epoch {self.epoch} of {self.epochs}" if self.epoch else "before the first epoch"
        head = f"interrupted {where}{at}"
        if self.kept is not None:
            return f"{head}: the checkpoint of epoch {self.kept} is kept in {self.out}; {again} from there"
        head += ", before the first checkpoint" if self.epoch else ""
        if self.phase == "refit":
            return f"{head}: the selection run is kept in {self.out}; {again}"
        return f"{head}: nothing kept; run the same command again to start over"


@dataclass
class Latch:
    """The first signal received while deferred (None: none)."""

    signum: int | None = None


@contextmanager
def deferred_signals() -> Iterator[Latch]:
    """SIGINT and SIGTERM noted in the latch instead of ending the process; a second one raises
    KeyboardInterrupt at once. The previous handlers come back on exit."""
    latch = Latch()
    if threading.current_thread() is not threading.main_thread():
        yield latch
        return

    def note(signum: int, frame: object) -> None:
        if latch.signum is not None:
            raise KeyboardInterrupt
        latch.signum = signum
        os.write(2, _NOTICE)  # not print(): a handler may run while the main thread is inside a write

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # e.g. a background job ignores SIGINT
            previous[sig] = signal.signal(sig, note)
    try:
        yield latch
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
