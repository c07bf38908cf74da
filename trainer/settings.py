"""What a `chat-tui train` run does: its settings, their defaults, and the phase plan.

`TrainSettings` is the one place every training knob and its default live, each with a
help string; the command line (`--set NAME=VALUE`, `--list-settings`), the app and the
benchmarks read it, and each phase builds its own config from it. Defaults that depend on
the device are None here and filled in by `resolved`: on a CPU the policy trains LoRA
adapters on its top 4 layers only (backward passes then stop there, and the frozen
bottom layers run once per row for all models, see trunk.py), the reward model trains its
top layers and head, and policy phases run few, small steps; on a GPU every layer trains.
Per-algorithm defaults (steps, learning rate) come from the registry (algorithms.py).

`plan_phases` decides from the data which phases run (SFT when there are demonstrations;
the reward model when the algorithm needs one) and raises NotEnoughFeedbackError, saying
how much more is needed, when the data cannot support the run.

Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from engine.sampling import SamplingParams
from trainer.algorithms import DEFAULT_ALGORITHM, get_algorithm
from trainer.datasets import TrainingSets
from trainer.errors import NotEnoughFeedbackError, TrainerError

MIN_PAIRS = 16  # preference pairs needed to train a reward model or run DPO
MIN_DEMONSTRATIONS = 4  # demonstrations needed for an SFT phase
MIN_PROMPTS = 4  # prompts needed for on-policy rollouts
CPU_TOP_LAYERS = 4
MAX_TOKENS = 32768  # the longest prompt or reply a setting may ask for (the chat's own limit)


def setting(default: Any, help: str) -> Any:
    """A dataclass field with its help string (read by `describe_settings`)."""
    return field(default=default, metadata={"help": help})

CHAT_MAX_NEW_TOKENS = SamplingParams().max_new_tokens


@dataclass
class TrainSettings:
    algo: str = setting(DEFAULT_ALGORITHM, "training algorithm (see trainer/algorithms.py)")
    use_lora: bool = setting(True, "train LoRA adapters (reference = adapters off) instead of the weights")
    lora_rank: int = setting(8, "rank of each LoRA adapter")
    lora_alpha: float = setting(16.0, "LoRA scale numerator: an adapter adds (alpha / rank) * B @ A")
    lora_mlp: bool = setting(True, "adapters on the MLP projections as well as attention")
    top_layers: int | None = setting(None, "train only the top N decoder layers (None: 4 on CPU, all on GPU; 0: all)")
    steps: int | None = setting(None, "policy optimizer steps (None: the algorithm's default for the device)")
    device: str = setting("auto", "auto (the GPU if any), cpu, cuda, cuda:N or mps")
    seed: int = setting(0, "random seed of the split, the shuffles and the rollouts")
    gradient_accumulation_steps: int = setting(1, "batches whose gradients are summed before each optimizer step")
    eval_fraction: float = setting(0.1, "share of conversations held out for evaluation")
    max_prompt_tokens: int = setting(256, "longest prompt context kept (its end: the latest turns)")
    # The chat's own reply limit: a taste about how a reply ends (a question back, a
    # summary) is invisible in a reply cut short, and a short reply must be seen whole,
    # end-of-turn included, or it looks the same as a long one cut at the limit.
    max_reply_tokens: int = setting(CHAT_MAX_NEW_TOKENS, "longest reply trained on or generated; longer replies are cut")
    minibatch_rows: int = setting(8, "rows (prompt + reply) per forward pass in the policy and reward phases")
    # SFT
    sft: bool | None = setting(None, "an SFT phase on demonstrations before the policy phase (None: the algorithm's default)")
    # Imitating the replies the user wrote or liked is the most direct way to their taste;
    # one epoch at 2e-4 barely moved a LoRA policy.
    sft_epochs: int = setting(2, "epochs over the demonstrations in the SFT phase")
    sft_lr: float | None = setting(None, "SFT learning rate (None: 1e-3 with LoRA, 1e-5 full)")
    # Reward model
    reward_epochs: int | None = setting(None, "reward-model epochs (None: 1 on CPU, 2 on GPU)")
    reward_lr: float = setting(2e-5, "reward-model learning rate")
    # Policy phase, shared
    policy_lr: float | None = setting(None, "policy learning rate (None: the algorithm's default)")
    # Rollouts sample plain softmax(logits / T) and the log-probs use the same T; a small
    # model's replies ramble at T = 1.
    temperature: float = setting(0.7, "sampling temperature of rollouts and evaluation replies")
    # PPO
    value_lr: float = setting(2e-5, "PPO value-model learning rate")
    # A smaller penalty let PPO overshoot into clipped replies and a higher perplexity.
    kl_beta: float = setting(0.2, "PPO per-token KL penalty coefficient")
    adaptive_kl: bool = setting(False, "adapt the KL coefficient towards target_kl")
    target_kl: float = setting(6.0, "per-reply KL (nats) the adaptive controller aims at")
    prompts_per_step: int = setting(8, "prompts rolled out per on-policy step")
    samples_per_prompt: int | None = setting(None, "replies sampled per prompt per on-policy step (None: the algorithm's)")
    ppo_epochs: int = setting(2, "PPO epochs over each step's rollouts")
    # Scores are standardised on the reference policy's rollouts, so this is in units of
    # their spread. It is a length prior: large, it teaches "shorter" whatever the user said.
    no_eos_penalty: float = setting(0.5, "subtracted from the standardised score of a rollout that never ended")
    # RLOO
    rloo_epochs: int = setting(1, "epochs over each RLOO batch (1: plain REINFORCE with the leave-one-out baseline)")
    # DPO
    dpo_beta: float = setting(0.1, "DPO's beta: the scale of the implicit reward")
    # DPO alone can widen its margin by pushing every reply's likelihood down, drifting away
    # from fluent text; the NLL of the preferred replies holds them up.
    dpo_nll_weight: float = setting(1.0, "weight of the per-token NLL of each prompt's best reply in DPO")
    ditto_samples: int = setting(2, "policy samples each written reply is preferred over (DITTO pairs), per run")
    kto_weight: float = setting(1.0, "weight of the KTO term on lone thumbs (replies voted up or down alone)")
    # Evaluation and output
    num_eval_prompts: int = setting(16, "held-out prompts both versions answer (reply length, KL, samples)")
    checkpoint_every: int = setting(2, "policy steps between resumable checkpoints")
    activate: bool = setting(False, "activate the new version even if evaluation did not improve")

    def validate(self) -> None:
        """TrainerError (DeviceError for the device) naming the first bad setting."""
        get_algorithm(self.algo)
        from engine.devices import resolve_device  # imports torch, which settings alone do not need

        resolve_device(self.device)
        checks = {
            "steps": self.steps is None or self.steps >= 1,
            "reward_epochs": self.reward_epochs is None or self.reward_epochs >= 1,
            "sft_epochs": self.sft_epochs >= 1,
            "lora_rank": self.lora_rank >= 1,
            "top_layers": self.top_layers is None or self.top_layers >= 0,
            "gradient_accumulation_steps": self.gradient_accumulation_steps >= 1,
            "samples_per_prompt": self.samples_per_prompt is None or self.samples_per_prompt >= 1,
            "prompts_per_step": self.prompts_per_step >= 1,
            "minibatch_rows": self.minibatch_rows >= 1,
            "ppo_epochs": self.ppo_epochs >= 1,
            "rloo_epochs": self.rloo_epochs >= 1,
            "temperature": self.temperature > 0,
            "kl_beta": self.kl_beta >= 0,
            "dpo_beta": self.dpo_beta > 0,
            "dpo_nll_weight": self.dpo_nll_weight >= 0,
            "kto_weight": self.kto_weight >= 0,
            "ditto_samples": self.ditto_samples >= 0,
            "max_reply_tokens": 1 <= self.max_reply_tokens <= MAX_TOKENS,
            "max_prompt_tokens": 1 <= self.max_prompt_tokens <= MAX_TOKENS,
            "eval_fraction": 0 <= self.eval_fraction < 1,
            "num_eval_prompts": self.num_eval_prompts >= 0,
            "checkpoint_every": self.checkpoint_every >= 1,
            "target_kl": self.target_kl > 0,
        }
        for rate in ("sft_lr", "reward_lr", "policy_lr", "value_lr"):
            value = getattr(self, rate)
            checks[rate] = value is None or value > 0
        for name, ok in checks.items():
            if not ok:
                raise TrainerError(f"setting {name} has a bad value: {getattr(self, name)!r}")

    def resolved(self, on_gpu: bool) -> "TrainSettings":
        """A copy with the device- and algorithm-dependent defaults filled in."""
        algorithm = get_algorithm(self.algo)
        out = replace(self)
        if out.top_layers is None:
            out.top_layers = 0 if on_gpu else CPU_TOP_LAYERS
        if out.sft_lr is None:
            out.sft_lr = 1e-3 if out.use_lora else 1e-5
        if out.policy_lr is None:
            out.policy_lr = algorithm.default_lr(out.use_lora)
        if out.reward_epochs is None:
            out.reward_epochs = 2 if on_gpu else 1
        if out.steps is None:
            out.steps = algorithm.default_steps(on_gpu)
        if out.samples_per_prompt is None:
            out.samples_per_prompt = algorithm.samples_per_prompt
        return out

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a rerun to resume this run's checkpoint (not --activate)."""
        data = asdict(self)
        data.pop("activate")
        return data

    def with_values(self, values: dict[str, str]) -> "TrainSettings":
        """A copy with settings given as text (`--set name=value`), each parsed to its
        field's type; TrainerError for an unknown name or a value of the wrong type."""
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for name, text in values.items():
            if name not in known:
                raise TrainerError(f"unknown setting {name!r} (see chat-tui train --list-settings)")
            changes[name] = parse_value(name, str(known[name].type), text)
        return replace(self, **changes)


def parse_value(name: str, type_name: str, text: str) -> Any:
    """`text` as the type a TrainSettings field declares ("int | None", "float", "bool", "str")."""
    text = text.strip()
    if "None" in type_name and text.lower() in ("none", ""):
        return None
    try:
        if type_name.startswith("bool"):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if type_name.startswith("int"):
            return int(text)
        if type_name.startswith("float"):
            return float(text)
    except ValueError:
        kind = {"int": "a whole number", "float": "a number", "bool": "true or false"}[type_name.split(" ")[0]]
        raise TrainerError(f"setting {name} takes {kind}, got {text!r}") from None
    return text


def describe_settings() -> list[tuple[str, str, str]]:
    """(name, default, help) of every setting, in declaration order."""
    rows = []
    for f in fields(TrainSettings):
        default = f.default if f.default is not MISSING else None
        rows.append((f.name, repr(default), f.metadata.get("help", "")))
    return rows


@dataclass
class PhasePlan:
    sft: bool
    reward: bool
    policy: str | None  # an algorithm name, or None (SFT only)
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [n for n, on in (("sft", self.sft), ("reward", self.reward), (self.policy or "", bool(self.policy))) if on]


def plan_phases(settings: TrainSettings, sets: TrainingSets) -> PhasePlan:
    """Which phases this data supports; NotEnoughFeedbackError when none does."""
    algorithm = get_algorithm(settings.algo)
    pairs = sets.num_train_pairs + sets.num_eval_pairs
    demos = len(sets.train_demos) + len(sets.eval_demos)
    prompts = len(sets.train_prompts)
    wants_sft = algorithm.sft_first if settings.sft is None else settings.sft
    has_sft = demos >= MIN_DEMONSTRATIONS and (wants_sft or not pairs >= MIN_PAIRS)
    has_pairs = pairs >= MIN_PAIRS
    notes = []
    if not has_pairs and not has_sft:
        raise NotEnoughFeedbackError(
            f"not enough feedback to train yet: {pairs} preference pair(s) (need {MIN_PAIRS}: rank alternative "
            f"replies or vote replies up and down) and {demos} demonstration(s) (need {MIN_DEMONSTRATIONS}: "
            f"write the reply you wanted)"
        )
    if not has_pairs:
        notes.append(f"only {pairs} preference pair(s) (need {MIN_PAIRS} for {algorithm.name.upper()}): running SFT only")
        return PhasePlan(sft=True, reward=False, policy=None, notes=notes)
    if not has_sft and demos and wants_sft:
        notes.append(f"{demos} demonstration(s) is too few for SFT (need {MIN_DEMONSTRATIONS}); skipping SFT")
    if algorithm.needs_prompts and prompts < MIN_PROMPTS:
        raise NotEnoughFeedbackError(
            f"{algorithm.name.upper()} needs at least {MIN_PROMPTS} training prompts, the snapshot has {prompts}; "
            f"try --algo dpo"
        )
    if not sets.eval_groups:
        notes.append("no held-out preference pairs (all feedback is in one conversation group); accuracy is not measured")
    return PhasePlan(sft=has_sft, reward=algorithm.needs_reward_model, policy=algorithm.name, notes=notes)
