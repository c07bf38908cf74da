"""What quantized weights cost in quality, measured on a fixed text.

The text is the trainer's fluency text (trainer/data/fluency_text.txt: prose written for
this project, which no model has been trained on, so its perplexity is held out). It is
cut into windows of equal length, and each window is decoded token by token through the
C++ decode step (engine/kernels/forced_decode.py), once from the fp32 weights and once
from each quantized copy. Reported per type: the mean KL divergence of its next-token
distributions from fp32's (nats per token), how often its most likely next token is
fp32's (top-1 agreement), and its perplexity on the text beside fp32's.

Not here: speed (chat_tui/benchmarks/engine_bench.py, bench/llama_cpp.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.bundle import LoadedModel
from engine.kernels.forced_decode import forced_logits
from engine.kernels.quantized_copy import quantized_copy

WINDOW = 128  # tokens per window: the text's windows decode as the rows of one step


@dataclass
class QuantQuality:
    quant: str
    kl_to_fp32: float  # mean KL(fp32 || quant) over the text's positions, nats
    top1_agreement: float  # fraction of positions whose argmax is fp32's
    perplexity: float
    fp32_perplexity: float
    tokens: int  # positions measured

    def line(self) -> str:
        return (f"{self.quant}: KL to fp32 {self.kl_to_fp32:.4f} nats/token, top-1 agreement "
                f"{100 * self.top1_agreement:.1f}%, perplexity {self.perplexity:.3f} (fp32 {self.fp32_perplexity:.3f}) "
                f"over {self.tokens} tokens")


def text_windows(loaded: LoadedModel, text: str, window: int = WINDOW) -> list[list[int]]:
    """The text's tokens cut into whole windows of `window` tokens (the rest dropped)."""
    ids = loaded.tokenizer.encode(text, add_special_tokens=False)
    if len(ids) < window:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than one window of {window}")
    return [ids[start : start + window] for start in range(0, len(ids) - window + 1, window)]


def _perplexity(log_probs: torch.Tensor, windows: torch.Tensor) -> float:
    """exp(mean NLL) of each window's next tokens given its earlier ones."""
    targets = windows[:, 1:]
    nll = -log_probs[:, :-1].gather(-1, targets[..., None])[..., 0]
    return math.exp(float(nll.mean()))


def measure_quality(loaded: LoadedModel, quants: list[str], text: str | None = None,
                    window: int = WINDOW) -> list[QuantQuality]:
    """The quality of each quantized type in `quants` against fp32 on `text` (default:
    the trainer's fluency text)."""
    if text is None:
        from trainer.fluency import fluency_text

        text = fluency_text()
    windows = text_windows(loaded, text, window)
    ids = torch.tensor(windows)
    reference = forced_logits(loaded.model, windows, None).log_softmax(-1)  # (W, T, V)
    fp32_perplexity = _perplexity(reference, ids)
    results = []
    for quant in quants:
        log_probs = forced_logits(loaded.model, windows, quantized_copy(loaded, quant)).log_softmax(-1)
        kl = F.kl_div(log_probs, reference, log_target=True, reduction="none").sum(-1)  # (W, T)
        agreement = (log_probs.argmax(-1) == reference.argmax(-1)).float().mean()
        results.append(QuantQuality(quant, float(kl.mean()), float(agreement), _perplexity(log_probs, ids),
                                    fp32_perplexity, ids.numel()))
    return results
