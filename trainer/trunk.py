"""A frozen trunk: run the bottom layers once, reuse their output many times.

When only the top N decoder layers train (LoRA on them, or the layers themselves), every
model of a run (policy, reference, reward and value models, all copies of one base) has
the same frozen bottom layers, so their output for a token row is the same for all of
them and for every epoch. `run_trunk` computes it once (no gradients); `hidden_states`
then runs only the top layers on it. Rows are right-padded with positions 0..T-1, so a
row's trunk output does not depend on its batch: it can be cached per row and re-padded.

It relies on the layout engine/models share (Llama and PaLM): `model.embed_tokens`,
`model.rotary(positions, dtype)`, `model.layers[i](x, cos, sin, cache, mask)`, `model.norm`,
and reproduces their `hidden_states` split in two; tests check the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Trunk:
    hidden: torch.Tensor  # (B, T, d): the output of layers [0, num_layers)
    num_layers: int


def _backbone(model: nn.Module) -> nn.Module:
    return getattr(model, "body", model).model


def _rotary(backbone: nn.Module, batch: int, length: int, device: torch.device, dtype: torch.dtype):
    positions = torch.arange(length, device=device).expand(batch, length)
    return backbone.rotary(positions, dtype)


@torch.no_grad()
def run_trunk(model: nn.Module, input_ids: torch.Tensor, num_layers: int) -> Trunk:
    """The output of the bottom `num_layers` layers for right-padded rows (B, T)."""
    backbone = _backbone(model)
    x = backbone.embed_tokens(input_ids)  # (B, T, d)
    cos, sin = _rotary(backbone, input_ids.shape[0], input_ids.shape[1], input_ids.device, x.dtype)
    for layer in backbone.layers[:num_layers]:
        x = layer(x, cos, sin, None, None)
    return Trunk(x, num_layers)


def hidden_states(model: nn.Module, input_ids: torch.Tensor, trunk: Trunk | None = None) -> torch.Tensor:
    """Final-norm hidden states (B, T, d), from a trunk when given (top layers only)."""
    body = getattr(model, "body", model)
    if trunk is None or trunk.num_layers == 0:
        return body.hidden_states(input_ids)
    backbone = body.model
    x = trunk.hidden
    cos, sin = _rotary(backbone, x.shape[0], x.shape[1], x.device, x.dtype)
    for layer in backbone.layers[trunk.num_layers :]:
        x = layer(x, cos, sin, None, None)
    return backbone.norm(x)


def pad_rows(rows: list[torch.Tensor], num_layers: int, width: int) -> Trunk:
    """Cached per-row trunk outputs back into a right-padded (B, width, d) trunk."""
    d = rows[0].shape[-1]
    hidden = rows[0].new_zeros(len(rows), width, d)
    for i, row in enumerate(rows):
        hidden[i, : row.shape[0]] = row
    return Trunk(hidden, num_layers)


def check_frozen(model: nn.Module, num_layers: int) -> None:
    """ValueError unless the bottom `num_layers` layers (and embeddings) are frozen: a cached
    trunk of layers that train would be stale and get no gradient."""
    backbone = _backbone(model)
    parts = [backbone.embed_tokens, *backbone.layers[:num_layers]] if num_layers else []
    for part in parts:
        if any(p.requires_grad for p in part.parameters()):
            raise ValueError(f"the bottom {num_layers} layers must be frozen to share a trunk")


def same_trunk(models: list[nn.Module], num_layers: int) -> bool:
    """Whether every model has bit-identical embeddings and bottom `num_layers` layers."""
    if num_layers == 0 or len(models) < 2:
        return True
    first = _backbone(models[0])
    for model in models[1:]:
        other = _backbone(model)
        for a, b in zip([first.embed_tokens, *first.layers[:num_layers]], [other.embed_tokens, *other.layers[:num_layers]]):
            if any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values())):
                return False
    return True


class TrunkCache:
    """Per-row trunk outputs under caller-chosen keys, computed on first use.

    `batch(keys, input_ids, lengths)` returns the trunk for a right-padded batch, computing
    only the rows not seen before. Past `max_bytes` it stops storing and computes each
    batch's trunk afresh (still skipping the frozen layers' backward pass).
    """

    def __init__(self, model: nn.Module, num_layers: int, max_bytes: int = 2 * 1024**3) -> None:
        check_frozen(model, num_layers)
        self.model = model
        self.num_layers = num_layers
        self.max_bytes = max_bytes
        self.rows: dict[object, torch.Tensor] = {}
        self.num_bytes = 0

    @property
    def is_active(self) -> bool:
        return self.num_layers > 0

    def batch(self, keys: list, input_ids: torch.Tensor, lengths: list[int]) -> Trunk | None:
        if not self.is_active:
            return None
        missing = [i for i, key in enumerate(keys) if key not in self.rows]
        if missing:
            fresh = run_trunk(self.model, input_ids[missing], self.num_layers)
            row_bytes = sum(lengths[i] for i in missing) * fresh.hidden.shape[-1] * fresh.hidden.element_size()
            if self.num_bytes + row_bytes > self.max_bytes:
                return fresh if len(missing) == len(keys) else run_trunk(self.model, input_ids, self.num_layers)
            for j, i in enumerate(missing):
                self.rows[keys[i]] = fresh.hidden[j, : lengths[i]].clone()
            self.num_bytes += row_bytes
        return pad_rows([self.rows[key] for key in keys], self.num_layers, input_ids.shape[1])
