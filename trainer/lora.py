"""Low-rank adapters (LoRA) and layer freezing: the two ways to train less than everything.

`apply_lora` swaps chosen `nn.Linear` modules of a Llama-family model (q/k/v/o, optionally
the MLP) for `LoRALinear`, which keeps the frozen base layer and adds B @ A scaled by
alpha / rank; B starts at zero so the wrapped model computes exactly what it did before.
`disabled(model)` switches every adapter off for a block, which turns the policy back into
its own frozen reference model without a second copy of the weights. `merged_state_dict`
folds the adapters into the base weights under the original HF parameter names, ready to
be saved as an ordinary model directory.

`freeze_except_top_layers` is the other cheap option: only the last N decoder layers and
the final norm train; embeddings (and a tied LM head) stay as they are.

Nothing here knows about optimizers, data or saving files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from trainer.errors import TrainerError

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / rank) * dropout(x) @ A^T @ B^T, with base frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base
        for param in self.base.parameters():
            param.requires_grad_(False)
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=device, dtype=dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=dtype))
        # A random, B zero: the adapter's product starts at exactly zero but has gradients.
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.rank = rank
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.enabled = True

    @property
    def weight(self) -> torch.Tensor:
        """The base weight, for code that inspects shapes and dtypes."""
        return self.base.weight

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """The adapter as a dense (out, in) weight update."""
        return (self.lora_b @ self.lora_a) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if not self.enabled:
            return out
        # x @ A^T is (.., rank): two thin matmuls instead of one dense (out, in) update.
        return out + (self.dropout(x) @ self.lora_a.t() @ self.lora_b.t()) * self.scaling


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a LlamaForCausalLM, or of a head model wrapping one in `.body`."""
    body = getattr(model, "body", model)
    try:
        return body.model.layers
    except AttributeError:
        raise TrainerError(f"{type(model).__name__} has no decoder layers at .model.layers") from None


def layer_indices(model: nn.Module, top_layers: int | None) -> list[int]:
    """Indices of the last `top_layers` decoder layers (all of them for None or 0)."""
    count = len(decoder_layers(model))
    if top_layers is None or top_layers == 0:
        return list(range(count))
    if top_layers < 0 or top_layers > count:
        raise TrainerError(f"top layers must be between 1 and {count}, got {top_layers}")
    return list(range(count - top_layers, count))


def apply_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    targets: Iterable[str] = ATTENTION_TARGETS,
    top_layers: int | None = None,
    dropout: float = 0.0,
) -> list[str]:
    """Freeze the whole model and put adapters on `targets` in the chosen layers.

    Returns the qualified names of the wrapped modules. Other trainable parameters (a
    reward or value head) must be unfrozen by the caller afterwards.
    """
    if rank < 1:
        raise TrainerError(f"LoRA rank must be >= 1, got {rank}")
    targets = tuple(targets)
    unknown = [t for t in targets if t not in ATTENTION_TARGETS + MLP_TARGETS]
    if unknown:
        raise TrainerError(f"unknown LoRA target {unknown[0]!r} (choose from {ATTENTION_TARGETS + MLP_TARGETS})")
    for param in model.parameters():
        param.requires_grad_(False)
    layers = decoder_layers(model)
    wrapped = []
    for index in layer_indices(model, top_layers):
        for qualified, module in list(layers[index].named_modules()):
            for child_name, child in list(module.named_children()):
                if child_name in targets and isinstance(child, nn.Linear):
                    setattr(module, child_name, LoRALinear(child, rank, alpha, dropout))
                    wrapped.append(f"layers.{index}.{qualified}.{child_name}".replace("..", "."))
    return wrapped


def lora_modules(model: nn.Module) -> Iterator[LoRALinear]:
    return (m for m in model.modules() if isinstance(m, LoRALinear))


def has_lora(model: nn.Module) -> bool:
    return any(True for _ in lora_modules(model))


@contextmanager
def disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` with every adapter switched off (the frozen reference), then restore."""
    modules = list(lora_modules(model))
    previous = [m.enabled for m in modules]
    for m in modules:
        m.enabled = False
    try:
        yield model
    finally:
        for m, was in zip(modules, previous):
            m.enabled = was


@contextmanager
def folded(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` with every adapter folded into a plain `nn.Linear` (base + B @ A, or the
    base alone when the adapter is disabled), then put the adapters back.

    For inference only (no gradients flow through the folded weights): decode kernels that
    read plain linear layers (the engine's C++ step) then serve the adapted model at full
    speed. The adapters' parameters are untouched.
    """
    swaps: list[tuple[nn.Module, str, LoRALinear]] = []
    with torch.no_grad():
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if not isinstance(child, LoRALinear):
                    continue
                if child.enabled:
                    base = child.base
                    plain = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                                      device=base.weight.device, dtype=base.weight.dtype)
                    plain.weight.copy_(base.weight + child.delta_weight().to(base.weight.dtype))
                    if base.bias is not None:
                        plain.bias.copy_(base.bias)
                    plain.requires_grad_(False)
                else:
                    plain = child.base
                setattr(parent, name, plain)
                swaps.append((parent, name, child))
    try:
        yield model
    finally:
        for parent, name, child in reversed(swaps):
            setattr(parent, name, child)


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors (lora_a / lora_b), for checkpoints."""
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_a", ".lora_b"))}


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with adapters folded in, under the un-wrapped names.

    `q_proj.base.weight` + B @ A * scale becomes `q_proj.weight`; the model is unchanged.
    Tensors are detached copies only where merged; others are the live tensors.
    """
    deltas = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            deltas[f"{name}.base.weight"] = module.delta_weight().detach()
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.endswith((".lora_a", ".lora_b")):
            continue
        if key in deltas:
            value = value + deltas[key].to(value.dtype)
        out[key.replace(".base.", ".")] = value
    return out


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer and put the plain nn.Linear back, in place."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                with torch.no_grad():
                    child.base.weight += child.delta_weight().to(child.base.weight.dtype)
                setattr(module, child_name, child.base)
    return model


def freeze_except_top_layers(model: nn.Module, top_layers: int) -> None:
    """Train only the last `top_layers` decoder layers and the final norm.

    Embeddings and the LM head stay frozen (SmolLM ties them, and they hold most of a small
    model's parameters). Heads added on top (reward, value) are the caller's to unfreeze.
    """
    indices = layer_indices(model, top_layers)
    for param in model.parameters():
        param.requires_grad_(False)
    layers = decoder_layers(model)
    for index in indices:
        for param in layers[index].parameters():
            param.requires_grad_(True)
    body = getattr(model, "body", model)
    for param in body.model.norm.parameters():
        param.requires_grad_(True)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, shared tensors counted once."""
    seen: dict[int, nn.Parameter] = {}
    for p in model.parameters():
        seen[id(p)] = p
    total = sum(p.numel() for p in seen.values())
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, total
