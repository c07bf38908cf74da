"""Models stored as a change to another model: "base + delta".

A trained version differs from the model it was trained from in a few tensors: with LoRA
only the adapted layers change, and by a low-rank product; with top-layer training only
the top layers change. Storing it whole repeats every unchanged weight. A delta directory
holds its own config, tokenizer and chat template (small) and, instead of
model.safetensors, `delta.safetensors` with

    NAME          a full replacement for tensor NAME (a weight that changed freely), and
    NAME.lora_a   (r, in) and NAME.lora_b (out, r): a low-rank update, weight += lora_b @ lora_a
                  (the adapter's alpha / rank scale is folded into lora_b when written),

applied in that order; the base is named in the store info file (`"base": NAME`) and lives
beside it in the same store, itself whole or a delta. Reading resolves the chain, so
everything that reads a model directory (loading, export, training from it) sees the
full weights.

`share_unchanged_weights` is the in-memory side: two loaded versions of one base hold the
tensors they have in common once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from engine.errors import ModelLoadError

DELTA_FILE = "delta.safetensors"
LORA_A = ".lora_a"
LORA_B = ".lora_b"
MAX_CHAIN = 64  # a longer chain of bases is a cycle in practice

LowRank = tuple[torch.Tensor, torch.Tensor]  # (lora_b scaled, lora_a): the update is b @ a


def is_delta_directory(directory: Path) -> bool:
    return (directory / DELTA_FILE).is_file()


def base_directory(directory: Path, info: Mapping) -> Path:
    """The directory of a delta's base: its name, beside it in the same store."""
    name = info.get("base")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ModelLoadError(f"{directory}: stored as changes to a base model, but its info names no valid base")
    base = directory.parent / name
    if not base.is_dir():
        raise ModelLoadError(f"{directory}: its base model {name!r} is missing from the store ({base})")
    return base


def split_delta(
    tensors: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor], low_rank: Mapping[str, LowRank] | None = None
) -> dict[str, torch.Tensor]:
    """The delta that turns `base` into `tensors` (+ `low_rank` updates on top): the tensors
    that differ from the base's, and each low-rank update as its two factors."""
    delta: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        original = base.get(name)
        if original is None or original.shape != tensor.shape or not torch.equal(original.to(tensor.dtype), tensor):
            delta[name] = tensor
    for name, (b, a) in (low_rank or {}).items():
        delta[name + LORA_B] = b
        delta[name + LORA_A] = a
    return delta


def apply_delta(base: dict[str, torch.Tensor], delta: Mapping[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """`base` changed by `delta`, in place (it is returned); ModelLoadError naming `source`
    for a delta that does not fit its base."""
    for name, tensor in delta.items():
        if name.endswith((LORA_A, LORA_B)):
            continue
        if name not in base or base[name].shape != tensor.shape:
            shape = tuple(base[name].shape) if name in base else "nothing"
            raise ModelLoadError(f"{source}: changed weight {name!r} {tuple(tensor.shape)} does not fit its base ({shape})")
        base[name] = tensor.to(base[name].dtype)
    for key in delta:
        if not key.endswith(LORA_A):
            continue
        name = key[: -len(LORA_A)]
        a, b = delta[key], delta.get(name + LORA_B)
        weight = base.get(name)
        if b is None or weight is None or (b.shape[0], a.shape[1]) != tuple(weight.shape) or b.shape[1] != a.shape[0]:
            raise ModelLoadError(f"{source}: low-rank update of {name!r} does not fit its base")
        base[name] = (weight.float() + b.float() @ a.float()).to(weight.dtype)
    return base


def share_unchanged_weights(model: torch.nn.Module, other: torch.nn.Module) -> int:
    """Point every parameter of `model` that equals `other`'s of the same name (shape,
    dtype, device and values) at `other`'s, so the two hold it once; returns the bytes
    `model` no longer holds on its own. Tied parameters stay tied."""
    theirs = dict(other.named_parameters(remove_duplicate=False))
    replaced: dict[int, torch.nn.Parameter] = {}
    freed = 0
    for module_name, module in model.named_modules():
        for attr, param in list(module._parameters.items()):
            if param is None:
                continue
            if id(param) in replaced:  # a tied parameter already swapped under another name
                module._parameters[attr] = replaced[id(param)]
                continue
            target = theirs.get(f"{module_name}.{attr}" if module_name else attr)
            if (target is None or target is param or target.shape != param.shape or target.dtype != param.dtype
                    or target.device != param.device or not torch.equal(target, param)):
                continue
            replaced[id(param)] = target
            module._parameters[attr] = target
            freed += param.numel() * param.element_size()
    return freed
