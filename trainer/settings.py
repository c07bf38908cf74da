"""What a `chat-tui train` run does: its settings, their defaults, and the phase plan.

`TrainSettings` holds every knob with a default that suits the device: on a CPU the
policy trains LoRA adapters on its top 4 layers only (backward passes then stop there,
and the frozen bottom layers run once per row for all models, see trunk.py), the reward
and value models train their top 4 layers and heads for one epoch, and PPO runs few,
small steps; on a GPU every layer trains.
`plan_phases` decides from the data which phases run (SFT when there are
demonstrations; the reward model before PPO) and raises NotEnoughFeedbackError, saying
how much more is needed, when the data cannot support the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from trainer.datasets import TrainingSets
from trainer.errors import NotEnoughFeedbackError, TrainerError

ALGORITHMS = ("ppo", "dpo")
MIN_PAIRS = 16  # preference pairs needed to train a reward model or run DPO
MIN_DEMONSTRATIONS = 4  # demonstrations needed for an SFT phase
MIN_PROMPTS = 4  # prompts needed for PPO rollouts
CPU_TOP_LAYERS = 4


@dataclass
class TrainSettings:
    algo: str = "ppo"
    use_lora: bool = True
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_mlp: bool = True  # adapters on the MLP projections as well as attention
    top_layers: int | None = None  # None: 4 on CPU, all on GPU; 0: all layers
    steps: int | None = None  # PPO steps, or DPO optimizer steps (None: defaults below)
    device: str = "auto"
    seed: int = 0
    gradient_accumulation_steps: int = 1
    eval_fraction: float = 0.1
    max_prompt_tokens: int = 256
    # Long enough that a short reply is seen whole, end-of-turn included: with 64, replies
    # of ~50 words were cut before their end and looked the same as long ones to the reward
    # model (held-out pair accuracy 0.53 at 64 tokens, 0.67 at 256, default model).
    max_reply_tokens: int = 128
    # SFT
    sft_epochs: int = 1
    sft_lr: float | None = None
    # Reward model
    reward_epochs: int | None = None  # None: 1 on CPU, 2 on GPU
    reward_lr: float = 2e-5
    # PPO
    ppo_lr: float | None = None
    value_lr: float = 2e-5
    # Per-token KL penalty. At 0.03 the default model's PPO run (96 ranked prompts, LoRA
    # lr 1e-3) overshot into clipped and emoji replies: held-out rate 13.9% -> 83.3% but
    # perplexity x1.15, KL 11.6 nats/reply. At 0.2, retrained from the same feedback:
    # 13.9% -> 70.8%, perplexity x1.022, KL 7.3 (bench.loop.diagnose).
    kl_beta: float = 0.2
    adaptive_kl: bool = False
    target_kl: float = 6.0
    prompts_per_step: int = 8
    samples_per_prompt: int = 2
    ppo_epochs: int = 2
    minibatch_rows: int = 8
    # Rollouts sample plain softmax(logits / T) and the log-probs use the same T; 0.7 keeps
    # a small model's replies readable (at 1.0 SmolLM2-135M rambles).
    temperature: float = 0.7
    # DPO
    dpo_lr: float | None = None
    dpo_beta: float = 0.1
    # Per-token NLL of each prompt's best reply, added to the DPO loss. Measured on the
    # default model (128 ranked prompts, 72 held out, bench.loop.diagnose): DPO alone took
    # the preference rate 13.9% -> 30.6% but the perplexity on a fixed text up 19% (KL 12
    # nats/reply); with this term at 1.0, 13.9% -> 31.9% at +1.6% perplexity (KL 2.0).
    dpo_nll_weight: float = 1.0
    # Evaluation and output
    num_eval_prompts: int = 8
    checkpoint_every: int = 2
    activate: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """TrainerError (DeviceError for the device) naming the first bad setting."""
        if self.algo not in ALGORITHMS:
            raise TrainerError(f"unknown algorithm {self.algo!r} (choose from {', '.join(ALGORITHMS)})")
        from engine.devices import resolve_device  # imports torch, which settings alone do not need

        resolve_device(self.device)
        checks = {
            "steps": self.steps is None or self.steps >= 1,
            "reward epochs": self.reward_epochs is None or self.reward_epochs >= 1,
            "lora rank": self.lora_rank >= 1,
            "top layers": self.top_layers is None or self.top_layers >= 0,
            "gradient accumulation steps": self.gradient_accumulation_steps >= 1,
            "samples per prompt": self.samples_per_prompt >= 1,
            "prompts per step": self.prompts_per_step >= 1,
            "temperature": self.temperature > 0,
            "kl beta": self.kl_beta >= 0,
            "dpo nll weight": self.dpo_nll_weight >= 0,
            "max reply tokens": self.max_reply_tokens >= 1,
            "max prompt tokens": self.max_prompt_tokens >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                value = getattr(self, name.replace(" ", "_"), None)
                raise TrainerError(f"{name} has a bad value: {value!r}")

    def resolved(self, on_gpu: bool) -> "TrainSettings":
        """A copy with the device-dependent defaults filled in."""
        out = TrainSettings(**{**asdict(self), "extra": dict(self.extra)})
        if out.top_layers is None:
            out.top_layers = 0 if on_gpu else CPU_TOP_LAYERS
        adapter = out.use_lora
        if out.sft_lr is None:
            out.sft_lr = 2e-4 if adapter else 1e-5
        if out.ppo_lr is None:
            # At 3e-4 eight PPO steps left the policy where it was on the default model
            # (approx KL per update ~1e-6, clip fraction 0, held-out KL 0.02 nats/reply).
            out.ppo_lr = 1e-3 if adapter else 5e-6
        if out.dpo_lr is None:
            # 1e-4 moved the LoRA policy too little in 30 CPU steps (10% -> 15% on 40 held-out
            # prompts, KL 0.02 nats/reply); 1e-3 reached the figures above.
            out.dpo_lr = 1e-3 if adapter else 5e-6
        if out.reward_epochs is None:
            out.reward_epochs = 2 if on_gpu else 1
        if out.steps is None:
            out.steps = (16 if not on_gpu else 50) if out.algo == "ppo" else (30 if not on_gpu else 200)
        return out

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a rerun to resume this run's checkpoint (not --activate)."""
        data = asdict(self)
        data.pop("activate")
        return data


@dataclass
class PhasePlan:
    sft: bool
    reward: bool
    policy: str | None  # "ppo", "dpo" or None (SFT only)
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [n for n, on in (("sft", self.sft), ("reward", self.reward), (self.policy or "", bool(self.policy))) if on]


def plan_phases(settings: TrainSettings, sets: TrainingSets) -> PhasePlan:
    """Which phases this data supports; NotEnoughFeedbackError when none does."""
    pairs = sets.num_train_pairs + sets.num_eval_pairs
    demos = len(sets.train_demos) + len(sets.eval_demos)
    prompts = len(sets.train_prompts)
    has_sft = demos >= MIN_DEMONSTRATIONS
    has_pairs = pairs >= MIN_PAIRS
    notes = []
    if not has_pairs and not has_sft:
        raise NotEnoughFeedbackError(
            f"not enough feedback to train yet: {pairs} preference pair(s) (need {MIN_PAIRS}: rank alternative "
            f"replies or vote replies up and down) and {demos} demonstration(s) (need {MIN_DEMONSTRATIONS}: "
            f"write the reply you wanted)"
        )
    if not has_pairs:
        notes.append(f"only {pairs} preference pair(s) (need {MIN_PAIRS} for {settings.algo.upper()}): running SFT only")
        return PhasePlan(sft=True, reward=False, policy=None, notes=notes)
    if not has_sft and demos:
        notes.append(f"{demos} demonstration(s) is too few for SFT (need {MIN_DEMONSTRATIONS}); skipping SFT")
    if settings.algo == "ppo" and prompts < MIN_PROMPTS:
        raise NotEnoughFeedbackError(f"PPO needs at least {MIN_PROMPTS} training prompts, the snapshot has {prompts}; try --algo dpo")
    if not sets.eval_groups:
        notes.append("no held-out preference pairs (all feedback is in one conversation group); accuracy is not measured")
    return PhasePlan(sft=has_sft, reward=settings.algo == "ppo", policy=settings.algo, notes=notes)
