"""The reward model: the policy's backbone with a scalar head, and how it is saved.

`ScalarHeadModel` is a causal LM from engine/models (Llama or PaLM), its LM head dropped,
plus a linear d -> 1 head. As a reward model it reads the head at each row's last real
token (the reply's final token; rows are right-padded). PPO's value model is the same class initialised
from the reward model, reading the head at every position (`forward` without lengths).

Saved as a versioned artifact: a directory holding config.json (the backbone's HF config
plus a `chat_tui_reward_model` block) and model.safetensors, written to a temporary
sibling and renamed into place so a reader never sees half of one.

Training lives in reward_training.py; nothing here knows about data or optimizers.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from engine.config import ModelConfig
from engine.models.registry import build_model, config_from_dict, config_to_dict
from engine.errors import EngineError
from trainer.errors import TrainerError
from trainer.lora import has_lora, merged_state_dict
from trainer.trunk import Trunk, hidden_states

ARTIFACT_KEY = "chat_tui_reward_model"
ARTIFACT_FORMAT = 1


class ScalarHeadModel(nn.Module):
    """A transformer body with a scalar head: a reward model or a value model."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.config: ModelConfig = body.config
        self.body = body
        # Only hidden states are read; dropping the LM head frees vocab x d parameters when
        # it is untied (when tied, the weight lives on as the input embedding).
        self.body.lm_head = nn.Identity()
        d = body.config.hidden_size
        param = next(body.parameters())
        self.head = nn.Linear(d, 1, device=param.device, dtype=param.dtype)
        # Small head so that initial scores are near 0 whatever the hidden state's scale.
        nn.init.normal_(self.head.weight, std=1.0 / (d + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_policy(cls, policy: nn.Module) -> "ScalarHeadModel":
        """A new head model on a deep copy of the policy's weights (the policy is untouched)."""
        if has_lora(policy):
            raise TrainerError("build the reward model from the policy before adding LoRA adapters")
        body = copy.deepcopy(policy)
        for param in body.parameters():
            param.requires_grad_(True)
        return cls(body)

    def forward(
        self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None, trunk: Trunk | None = None
    ) -> torch.Tensor:
        """Scores of right-padded rows input_ids (B, T), as float32.

        With `lengths` (B,): the head at each row's last real token, (B,) (reward model).
        Without: the head at every position, (B, T) (value model). One method for both so
        that the call goes through forward(), which DistributedDataParallel requires.
        With `trunk` (trainer/trunk.py), only the layers above it run.
        """
        if lengths is None:
            hidden = hidden_states(self.body, input_ids, trunk)  # (B, T, d)
            return self.head(hidden).squeeze(-1).float()
        if bool((lengths < 1).any()) or bool((lengths > input_ids.shape[1]).any()):
            raise TrainerError(f"sequence lengths must be in 1..{input_ids.shape[1]}, got {lengths.tolist()}")
        hidden = hidden_states(self.body, input_ids, trunk)  # (B, T, d)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        last = hidden[rows, lengths - 1]  # (B, d)
        return self.head(last).squeeze(-1).float()


TMP_FOLDER = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$")  # save_reward_model's staging name


def abandoned_temp_folders(folder: Path) -> list[Path]:
    """Staging folders in `folder` left by a save_reward_model whose process is gone (it
    was killed mid-write; an ordinary failure removes its own)."""
    from engine.loading.model_store import process_exists

    if not folder.is_dir():
        return []
    return [entry for entry in sorted(folder.iterdir())
            if entry.is_dir() and (match := TMP_FOLDER.match(entry.name)) and not process_exists(int(match["pid"]))]


def save_reward_model(model: ScalarHeadModel, directory: Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write the model to `directory` atomically (temp sibling, then rename). Returns it.

    Refuses to overwrite an existing artifact: every saved reward model is a new version.
    """
    directory = Path(directory)
    if directory.exists():
        raise TrainerError(f"reward model directory {str(directory)!r} already exists")
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(mode=0o700)
    try:
        state = merged_state_dict(model) if has_lora(model) else model.state_dict()
        # safetensors refuses aliased tensors; clone makes every entry its own storage.
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = config_to_dict(model.config)
        config[ARTIFACT_KEY] = {"format": ARTIFACT_FORMAT, **(metadata or {})}
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_reward_model(directory: Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> ScalarHeadModel:
    """Read a reward model saved by `save_reward_model`."""
    directory = Path(directory)
    config_path = directory / "config.json"
    weights_path = directory / "model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise TrainerError(f"{str(directory)!r} is not a reward model directory (config.json and model.safetensors)")
    raw = json.loads(config_path.read_text())
    if ARTIFACT_KEY not in raw:
        raise TrainerError(f"{str(config_path)!r} has no {ARTIFACT_KEY!r} block: not a reward model")
    config = config_from_dict(raw, source=str(config_path))
    with torch.device("meta"):
        body = build_model(config)
    model = ScalarHeadModel(body)
    state = load_file(str(weights_path), device=str(device))
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    # Non-persistent buffers (rotary frequencies) were created on meta: rebuild them.
    model.body.model.rotary = type(model.body.model.rotary)(config).to(device)
    return model.eval()


def latest_reward_model(root: Path, config: ModelConfig) -> Path | None:
    """The newest saved reward model under `root` (by the run that trained it) whose
    backbone has the shape of `config`, so it can score and keep training on this base's
    feedback; None when there is none. Unreadable folders are skipped."""
    best: tuple[int, Path] | None = None
    for folder in Path(root).glob("*") if Path(root).is_dir() else []:
        try:
            raw = json.loads((folder / "config.json").read_text())
            meta = raw[ARTIFACT_KEY]
            saved = config_from_dict(raw, source=str(folder))
        except (OSError, ValueError, KeyError, TypeError, TrainerError, EngineError):
            continue
        same_shape = all(getattr(saved, key) == getattr(config, key) for key in (
            "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "intermediate_size"))
        run_id = meta.get("run_id")
        if same_shape and isinstance(run_id, int) and (best is None or run_id > best[0]):
            best = (run_id, folder)
    return best[1] if best else None


def reward_model_metadata(directory: Path) -> dict[str, Any]:
    """The `chat_tui_reward_model` block of a saved reward model's config.json."""
    raw = json.loads((Path(directory) / "config.json").read_text())
    return dict(raw.get(ARTIFACT_KEY, {}))
