"""The contract between the trainer and a loss, so that the training loop never names a concrete loss.

A loss sees the two heads' outputs, ``za [B, Da]`` and ``zb [B, Db]`` (row i of one paired with row i of
the other, not yet normalised), and the pairs' integer labels ``[B]`` (``-1`` unknown) or None, and
returns a scalar. Its parameters (a learnable temperature, a bias) are trained with the heads.

:class:`Loss` states the rest of what the trainer relies on, each with a default that does nothing
special: :meth:`Loss.post_step` after every optimiser step, :meth:`Loss.summary` for the adapter,
:meth:`Loss.step` to take over a training step (the CLIP loss folds a linear head into its logits),
and :attr:`Loss.train_settings`, the trainer's settings a loss takes as options.

A plugin's factory may return any ``torch.nn.Module`` with that ``forward``: :class:`PluginLoss` holds it
under this contract, calling its own ``post_step`` and ``summary`` where it defines them (the optional
methods docs/plugins.md promises).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ...heads import Head

#: the trainer's settings a loss may take as options (see :attr:`Loss.train_settings`)
TRAIN_SETTINGS = frozenset({"precision", "compile"})


@dataclass(frozen=True)
class HeadPair:
    """The two heads of a run: ``a``, ``b`` for their specs and layers, ``run_a``, ``run_b`` as the
    trainer calls them (compiled by torch.compile when ``compiled``)."""

    a: Head
    b: Head
    run_a: Callable[[torch.Tensor], torch.Tensor]
    run_b: Callable[[torch.Tensor], torch.Tensor]
    compiled: bool = False

    @classmethod
    def build(cls, a: Head, b: Head, compile: bool) -> HeadPair:
        if compile:
            return cls(a, b, torch.compile(a), torch.compile(b), True)
        return cls(a, b, a, b, False)


class Loss(nn.Module, ABC):
    """A contrastive loss the trainer can drive; subclass it, or return any module from a factory."""

    #: trainer settings (of :data:`TRAIN_SETTINGS`) passed to the constructor unless given as options;
    #: declared on the class, so that the registry knows before building the loss
    train_settings: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def forward(self, za: torch.Tensor, zb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar loss of ``za [B, Da]`` against ``zb [B, Db]``, ``labels [B]`` int64 or None."""

    def step(
        self, heads: HeadPair, xa: torch.Tensor, xb: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """The loss of one training batch (``xa [B, in_a]``, ``xb [B, in_b]``, the encoders' outputs).

        The default runs both heads and :meth:`forward`; a loss overrides it to compute the same value
        (and gradients) another way, knowing the heads.
        """
        return self(heads.run_a(xa), heads.run_b(xb), labels)

    def post_step(self) -> None:
        """After every optimiser step: a loss with a bounded parameter clamps it here."""

    def summary(self) -> dict[str, float]:
        """Learned values worth recording in the adapter (``loss.learned``)."""
        return {}


class PluginLoss(Loss):
    """A plugin's plain module under the :class:`Loss` contract.

    Its state dict is the module's own, key for key, so that checkpoints name its tensors as they would
    without this wrapper.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        # optional by the plugin contract: looked up once here, never by the trainer
        self._post_step: Callable[[], None] | None = getattr(module, "post_step", None)
        self._summary: Callable[[], dict[str, float]] | None = getattr(module, "summary", None)

    def forward(self, za: torch.Tensor, zb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.module(za, zb, labels)

    def post_step(self) -> None:
        if self._post_step is not None:
            self._post_step()

    def summary(self) -> dict[str, float]:
        return self._summary() if self._summary is not None else {}

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)


def declared_settings(factory: Callable[..., Any]) -> frozenset[str]:
    """The trainer settings a factory takes: a :class:`Loss` subclass declares them; anything else none."""
    if isinstance(factory, type) and issubclass(factory, Loss):
        return factory.train_settings & TRAIN_SETTINGS
    return frozenset()
