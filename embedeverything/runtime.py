"""Where and on how many threads torch runs: shared by ``ee embed``, its Dask workers, the trainer and the
bundled plugins, so that every one of them decides it the same way."""

from __future__ import annotations

import os
import sys
from typing import Any

from .errors import UserError

__all__ = ["choose_device", "pin_threads"]


def pin_threads(threads: int | None) -> int:
    """Pin torch's intra-op threads: CPU results depend on the thread count, so resumed runs match.

    The default is the CPUs this process may use; Dask workers pin 1 (as Dask's nanny does for BLAS).
    """
    n = int(threads) if threads else len(os.sched_getaffinity(0))
    torch = sys.modules.get("torch")  # an encoder that uses torch has imported it by now
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def choose_device(want: str = "auto") -> Any:
    """``auto``: CUDA when torch sees a device, else the CPU; ``cuda`` without one is a user's mistake."""
    import torch

    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        from .encoder import option_flag

        raise UserError(
            f"{option_flag()} device={want} but torch sees no CUDA device; use device=cpu or auto"
        )
    return torch.device(want)
