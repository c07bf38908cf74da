"""Telling whether a model's tensors are still where a prepared step last found them.

The C++ decode step (engine/kernels/llama_decode.py) keeps a table of weight addresses, and a
CUDA graph (engine/graphed_decode.py) has every address baked into its kernels. Both stay
valid through in-place updates (an optimizer step between PPO rollouts), and both go
stale when a tensor moves: `.to()`, assigning `.data`, LoRA wrapping a projection,
`load_state_dict(assign=True)`.

`registrations()` counts, process-wide, every time any module gets a new submodule or
parameter (PyTorch's global registration hooks); `addresses_of` reads where tensors'
data are. `Placement` keeps both from when a consumer was built, and says whether they
still hold.

Not here: rebuilding anything; each consumer decides what "stale" costs it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch.nn.modules.module import (
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)

_registrations = 0


def _count_registration(*_args) -> None:
    global _registrations
    _registrations += 1


register_module_module_registration_hook(_count_registration)
register_module_parameter_registration_hook(_count_registration)


def registrations() -> int:
    """How many submodules and parameters have been registered on any module so far."""
    return _registrations


def addresses_of(tensors: Iterable[torch.Tensor | None]) -> list[int]:
    """Each tensor's data address (0 for None, e.g. a missing bias)."""
    return [0 if t is None else t.data_ptr() for t in tensors]


@dataclass
class Placement:
    """Where some tensors' data were, and the registration count, at one moment."""

    registrations: int
    tensors: list[torch.Tensor | None]
    addresses: list[int]

    @classmethod
    def now(cls, tensors: list[torch.Tensor | None]) -> Placement:
        return cls(registrations(), tensors, addresses_of(tensors))

    def holds(self) -> bool:
        """No module anywhere has registered anything since, and every tensor's data are
        where they were (in-place updates, an optimizer's say, keep that true)."""
        return self.registrations == registrations() and addresses_of(self.tensors) == self.addresses
