"""The training algorithms `chat-tui train` offers: one registry that every caller reads.

An `Algorithm` says what a policy phase needs (a reward model, prompts to roll out on),
its device-dependent defaults (steps, learning rate), and where its phase lives: a module
path and function name, imported only when a run uses it, so the command line, the app
and the benchmarks can list the algorithms without importing torch.

Adding an algorithm is one entry in `ALGORITHMS` plus the module its `phase` names. The
phase function has the signature of `trainer.phases.ppo.run_phase`:
`run_phase(run, loaded, sets, reward_model, pad_id) -> dict[str, float]`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainer.errors import TrainerError


@dataclass(frozen=True)
class Algorithm:
    name: str
    label: str  # a few words for menus: "DPO: on preference pairs"
    summary: str  # one sentence for --help
    phase: str  # "module:function" of the policy phase
    needs_reward_model: bool  # a reward model is trained (or updated) before the policy phase
    needs_prompts: bool  # samples replies from the policy while training (on-policy)
    needs_value_model: bool  # a value model (a second trained copy of the reward model)
    steps_cpu: int  # default policy steps on a CPU
    steps_gpu: int  # and on a GPU
    lr_lora: float  # default learning rate of LoRA adapters
    lr_full: float  # and of full weights
    samples_per_prompt: int = 2  # replies sampled per prompt per on-policy step
    sft_first: bool = True  # an SFT phase on demonstrations before the policy phase

    def default_steps(self, on_gpu: bool) -> int:
        return self.steps_gpu if on_gpu else self.steps_cpu

    def default_lr(self, use_lora: bool) -> float:
        return self.lr_lora if use_lora else self.lr_full

    def load_phase(self) -> Callable[..., dict[str, Any]]:
        module_name, function = self.phase.split(":")
        return getattr(importlib.import_module(module_name), function)


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm(
            name="ppo", label="PPO: reward model + RLHF",
            summary="train a reward model on your rankings, then PPO against it with a KL penalty",
            phase="trainer.phases.ppo:run_phase", needs_reward_model=True, needs_prompts=True, needs_value_model=True,
            # A smaller adapter rate barely moves the policy in a CPU run's few steps.
            steps_cpu=16, steps_gpu=50, lr_lora=1e-3, lr_full=5e-6,
        ),
        Algorithm(
            name="dpo", label="DPO: on preference pairs",
            summary="direct preference optimisation on your rankings, no reward model (cheaper)",
            phase="trainer.phases.dpo:run_phase", needs_reward_model=False, needs_prompts=False, needs_value_model=False,
            # At 1e-3 a CPU round's 30 steps moved the model about 1.5 nats per reply and
            # learned only the length tastes (docs/learning.md has both tables).
            steps_cpu=30, steps_gpu=200, lr_lora=3e-3, lr_full=5e-6,
        ),
        Algorithm(
            name="rloo", label="RLOO: reward model, k samples",
            summary="train a reward model, then REINFORCE with a leave-one-out baseline over k samples "
                    "per prompt (no value model)",
            phase="trainer.phases.rloo:run_phase", needs_reward_model=True, needs_prompts=True, needs_value_model=False,
            steps_cpu=16, steps_gpu=50, lr_lora=1e-3, lr_full=5e-6, samples_per_prompt=4,
        ),
    )
}
# DPO (with the SFT phase, the taught-reply pairs and the thumbs term) is the one that
# learned tastes other than length within a CPU round; docs/learning.md has the figures.
DEFAULT_ALGORITHM = "dpo"


def algorithm_names() -> tuple[str, ...]:
    return tuple(ALGORITHMS)


def get_algorithm(name: str) -> Algorithm:
    """The registered algorithm, or a TrainerError naming the choices."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise TrainerError(f"unknown algorithm {name!r} (choose from {', '.join(ALGORITHMS)})") from None


def menu_choices() -> list[tuple[str, str]]:
    """(label, name) pairs for a selection widget."""
    return [(a.label, a.name) for a in ALGORITHMS.values()]
