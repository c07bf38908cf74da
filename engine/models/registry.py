"""Which model class and config reader belong to a checkpoint's `model_type`.

Loaders and the engine call `config_from_dict` on a model directory's `config.json` and
`build_model` on the result, so adding an architecture means one entry here and one file
under engine/models/. Nothing here reads files or loads weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from engine.config import LLAMA_FAMILY, ModelConfig
from engine.errors import ModelLoadError
from engine.models.gemma3 import GEMMA3_MODEL_TYPE, Gemma3ForCausalLM, gemma3_config_from_dict, gemma3_config_to_dict
from engine.models.llama import LlamaForCausalLM
from engine.models.palm import PalmForCausalLM, palm_config_from_dict, palm_config_to_dict


@dataclass(frozen=True)
class Architecture:
    config_from_dict: Callable[[dict[str, Any], str], ModelConfig]
    config_to_dict: Callable[[ModelConfig], dict[str, Any]]
    model_class: Callable[[ModelConfig], nn.Module]


_LLAMA = Architecture(ModelConfig.from_hf_dict, ModelConfig.to_hf_dict, LlamaForCausalLM)
_PALM = Architecture(palm_config_from_dict, palm_config_to_dict, PalmForCausalLM)
_GEMMA3 = Architecture(gemma3_config_from_dict, gemma3_config_to_dict, Gemma3ForCausalLM)

ARCHITECTURES: dict[str, Architecture] = {
    **{name: _LLAMA for name in LLAMA_FAMILY},
    "palm": _PALM,
    GEMMA3_MODEL_TYPE: _GEMMA3,
}


def architecture_for(model_type: str | None, source: str = "config.json") -> Architecture:
    """The entry for `model_type`; a ModelLoadError naming it when unsupported."""
    try:
        return ARCHITECTURES[model_type]  # type: ignore[index]
    except KeyError:
        raise ModelLoadError(
            f"{source}: unsupported architecture model_type={model_type!r} "
            f"(supported: {', '.join(sorted(ARCHITECTURES))})"
        ) from None


def config_from_dict(raw: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """A `ModelConfig` from a `config.json` dict, read by its architecture's own reader."""
    return architecture_for(raw.get("model_type"), source).config_from_dict(raw, source)


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """The `config.json` dict for `config`, written by its architecture's own writer."""
    return architecture_for(config.model_type).config_to_dict(config)


def build_model(config: ModelConfig) -> nn.Module:
    """An uninitialised (randomly initialised) model of the config's architecture."""
    return architecture_for(config.model_type).model_class(config)
