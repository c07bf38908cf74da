"""Which weight type the chat decodes from, and the checks on a --quant option.

The chat decodes from `CHAT_QUANT` on the CPU: of the quantized types, the fastest whose
cost in quality is small, by the measurements in docs/performance.md ("Quantized
decode"; `python bench/llama_cpp.py` measures both again). On a GPU it decodes from the
weights as they are (bf16): quantized weights are a CPU decode path. `ask` and `bench`
default to "none", so that their output stays the model's own and comparable with
transformers'.

No torch import: the command line reads this to list its options.
"""

from __future__ import annotations

from chat_tui.errors import UserError
from engine.kernels.quant_types import QUANT_TYPES

__all__ = ["CHAT_QUANT", "QUANT_TYPES", "chat_quant", "check_quant_device"]

CHAT_QUANT = "q8_0"


def chat_quant(requested: str | None, device: str) -> str:
    """The type the chat decodes from: as asked, else CHAT_QUANT on the CPU and "none"
    elsewhere. UserError for a quantized type asked for on another device."""
    if requested is None:
        return CHAT_QUANT if device == "cpu" else "none"
    check_quant_device(requested, device)
    return requested


def check_quant_device(quant: str, device: str) -> None:
    """UserError when `quant` is a quantized type and `device` is not the CPU."""
    if quant != "none" and device != "cpu":
        raise UserError(f"--quant {quant} decodes on the CPU only; with --device {device} use --quant none")
