"""`LoadedModel`: what a loader hands to the engine and the app.

A loaded model is the network plus what is needed to talk to it: its config, tokenizer
and chat template, and the directory it came from. Loaders (engine/loading/) build it;
the engine, the trainer and the app consume it. Nothing here touches files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from engine.config import ModelConfig
    from engine.text.chat_template import ChatTemplate
    from engine.text.tokenizer import Tokenizer


@dataclass
class LoadedModel:
    model: "torch.nn.Module"  # LlamaForCausalLM (or another engine/models/ class), eval mode
    config: "ModelConfig"
    tokenizer: "Tokenizer"
    chat_template: "ChatTemplate"
    path: Path  # the model directory (or GGUF file) it was loaded from
    name: str = ""  # store name, or the directory's name
    metadata: dict[str, Any] = field(default_factory=dict)

    def encode_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of a conversation rendered with the model's own chat template.

        messages: [{"role": "system"|"user"|"assistant", "content": str}, ...].
        """
        text = self.chat_template.render(messages, add_generation_prompt=add_generation_prompt)
        return self.tokenizer.encode(text, add_special_tokens=False)

    @property
    def stop_token_ids(self) -> list[int]:
        """Token ids that end an assistant turn: the template's end-of-turn plus eos."""
        ids = list(self.chat_template.stop_token_ids(self.tokenizer))
        for eos in self.config.eos_token_ids:
            if eos not in ids:
                ids.append(eos)
        return ids
