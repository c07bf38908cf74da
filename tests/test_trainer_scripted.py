"""End to end on a tiny chat model with a scripted rater.

The world: a word-level tokenizer (tokenizers' WordLevel) with ChatML special tokens, the
engine's ChatML template, and a 2-layer Llama. SFT on random replies gives a base policy
that answers with a few random words and ends its turn. The scripted rater prefers replies
with a larger share of "kind" words. From the base policy's own samples, ranked by the
rater, the reward model must reach > 90% held-out pair accuracy, and PPO (with that
reward model) and DPO (on the same rankings) must each raise the kind-word share of fresh
samples on held-out prompts while the KL to the base policy stays bounded.

Everything is seeded; thresholds leave a wide margin below what these seeds reach
(recorded next to each assert).
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import tokenizers
import torch
from tokenizers import decoders, models, pre_tokenizers

from engine.bundle import LoadedModel
from engine.engine import LLMEngine
from engine.sampling import SamplingParams
from engine.text.chat_template import ChatTemplate
from engine.text.tokenizer import Tokenizer
from tiny_models import tiny_llama
from trainer import lora
from trainer.datasets import ComparisonGroup, PromptExample, SFTExample, encode_exchange
from trainer.dpo import DPOConfig, train_dpo
from trainer.evaluation import sample_replies, sequence_kl
from trainer.ppo import PPOConfig, PPOTrainer
from trainer.reward_model import ScalarHeadModel
from trainer.reward_training import RewardTrainingConfig, train_reward_model
from trainer.runtime import make_accelerator, seed_everything
from trainer.sft import SFTConfig, train_sft

SPECIAL = ["<unk>", "<|im_end|>", "<|im_start|>"]
ROLE_WORDS = ["user", "assistant", "system"]
KIND_WORDS = ["kind", "clear", "warm", "honest", "helpful", "calm", "bright", "gentle"]
OTHER_WORDS = [f"w{i}" for i in range(40)]
MAX_NEW = 16


def tiny_chat_model(seed: int = 0) -> LoadedModel:
    vocab = {t: i for i, t in enumerate(SPECIAL + ROLE_WORDS + KIND_WORDS + OTHER_WORDS)}
    hf = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    hf.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tokenizer = Tokenizer.from_tokenizers(hf, eos_token="<|im_end|>", unk_token="<unk>")
    model = tiny_llama(len(vocab), seed, tie_word_embeddings=True, max_position_embeddings=128,
                       eos_token_id=vocab["<|im_end|>"], bos_token_id=None)
    return LoadedModel(model, model.config, tokenizer, ChatTemplate(None), Path("."), "tiny")


def kind_share(text: str) -> float:
    """The scripted rater: share of kind words in a reply."""
    words = text.split()
    return sum(w in KIND_WORDS for w in words) / max(1, len(words))


def random_words(rng: random.Random, kind_probability: float, count: int) -> str:
    return " ".join(rng.choice(KIND_WORDS) if rng.random() < kind_probability else rng.choice(OTHER_WORDS) for _ in range(count))


def sft_base_model(rng: random.Random) -> tuple[LoadedModel, dict[str, float]]:
    """A tiny chat model taught by SFT to answer a few random words and end its turn."""
    loaded = tiny_chat_model()
    demos = []
    for i in range(300):
        context = [{"role": "user", "content": random_words(rng, 0.0, 3)}]
        prompt, reply = encode_exchange(loaded, context, random_words(rng, rng.random() * 0.6, rng.randint(2, 7)))
        demos.append(SFTExample(i, prompt, reply))
    config = SFTConfig(epochs=4, lr=3e-3, examples_per_batch=16)
    result = train_sft(loaded.model, demos[:270], demos[270:], config, make_accelerator("cpu"), 0)
    return loaded, result.metrics


class World:
    """The base policy after SFT, prompts, and the rater's rankings of base samples."""

    def __init__(self) -> None:
        seed_everything(0)
        rng = random.Random(0)
        prompt_text = lambda: random_words(rng, 0.0, 3)  # noqa: E731
        self.loaded, self.sft_metrics = sft_base_model(rng)
        self.accelerator = make_accelerator("cpu")
        self.base_state = copy.deepcopy(self.loaded.model.state_dict())
        self.prompts = []
        for i in range(400):
            context = [{"role": "user", "content": prompt_text()}]
            self.prompts.append(PromptExample(i, self.loaded.encode_chat(context), context))
        self.train_prompts, self.eval_prompts = self.prompts[:350], self.prompts[350:]
        engine = LLMEngine(self.loaded, max_batch_size=64)
        samples = sample_replies(engine, self.train_prompts, MAX_NEW, samples_per_prompt=4, seed=7)
        self.groups = []
        for index, prompt in enumerate(self.train_prompts):
            rows = [r for r, k in enumerate(samples.prompt_index) if k == index]
            shares = [kind_share(samples.texts[r]) for r in rows]
            order = sorted(range(len(rows)), key=lambda j: -shares[j])
            pairs = [(a, b) for n, a in enumerate(order) for b in order[n + 1 :] if shares[a] - shares[b] > 0.1]
            if pairs:
                self.groups.append(ComparisonGroup(index, index, prompt.prompt_ids, [samples.replies[r] for r in rows], pairs))
        self.train_groups, self.eval_groups = self.groups[:-40], self.groups[-40:]
        self.reward_model = ScalarHeadModel.from_policy(self.loaded.model)
        self.rm = train_reward_model(
            self.reward_model, self.train_groups, self.eval_groups, RewardTrainingConfig(epochs=4, lr=2e-3), self.accelerator, 0
        )

    def fresh_policy(self) -> LoadedModel:
        loaded = copy.copy(self.loaded)
        loaded.model = copy.deepcopy(self.loaded.model)
        loaded.model.load_state_dict(self.base_state)
        return loaded

    def measure(self, loaded: LoadedModel, reference: torch.nn.Module | None) -> tuple[float, float]:
        """(mean kind share, mean per-reply KL to the reference) of fresh held-out samples."""
        samples = sample_replies(LLMEngine(loaded, max_batch_size=64), self.eval_prompts, MAX_NEW, samples_per_prompt=4, seed=99)
        share = sum(kind_share(t) for t in samples.texts) / len(samples.texts)
        kl = sequence_kl(loaded.model, reference, samples.prompts, samples.replies, 0, "cpu")
        return share, float(kl.mean())


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def test_sft_base_policy_learned_the_reply_format(world):
    assert world.sft_metrics["eval_loss_after"] < world.sft_metrics["eval_loss_before"] / 3  # 3.85 vs 30.5
    samples = sample_replies(LLMEngine(world.fresh_policy(), max_batch_size=64), world.eval_prompts, MAX_NEW, seed=3)
    assert sum(samples.finished) / len(samples.finished) > 0.9  # replies end with <|im_end|> (1.0)


def test_reward_model_scripted_rater_held_out_accuracy_above_90_percent(world):
    assert len(world.groups) > 250 and world.rm.metrics["eval_pairs"] > 100
    assert world.rm.metrics["eval_accuracy"] > 0.9  # 0.974 on 194 held-out pairs


def test_engine_logprobs_equal_the_trainers_recomputed_logprobs(world):
    """The shift/gather/temperature conventions agree with what the engine sampled."""
    loaded = world.fresh_policy()
    engine = LLMEngine(loaded, max_batch_size=16)
    config = PPOConfig(lr=1e-5, temperature=0.7, samples_per_prompt=3, max_new_tokens=MAX_NEW)
    trainer = PPOTrainer(loaded.model, copy.deepcopy(world.reward_model), world.reward_model, engine, config,
                         world.accelerator, 0, reference=copy.deepcopy(loaded.model))
    rollouts = trainer.rollout(world.eval_prompts[:6], seed=5)
    exp = trainer.make_experience(rollouts)
    for sampled, recomputed, reply in zip(rollouts.logprobs, exp.old_logprobs, rollouts.replies):
        assert len(sampled) == len(recomputed) == len(reply)
        assert torch.allclose(torch.tensor(sampled), recomputed, atol=1e-4)
    # The policy equals its reference before training: every per-token KL is zero.
    assert all(torch.allclose(o, r) for o, r in zip(exp.old_logprobs, exp.ref_logprobs))


def test_ppo_raises_the_preferred_behaviour_with_bounded_kl(world):
    seed_everything(1)
    loaded = world.fresh_policy()
    reference = copy.deepcopy(loaded.model)
    share_before, _ = world.measure(loaded, reference)
    engine = LLMEngine(loaded, max_batch_size=64)
    config = PPOConfig(steps=20, prompts_per_step=16, samples_per_prompt=2, max_new_tokens=MAX_NEW, lr=3e-4,
                       value_lr=1e-3, kl_beta=0.05, ppo_epochs=2, minibatch_rows=16, temperature=1.0)
    trainer = PPOTrainer(loaded.model, copy.deepcopy(world.reward_model), world.reward_model, engine, config,
                         world.accelerator, 0, reference=reference)
    history = trainer.train(world.train_prompts)
    share_after, kl = world.measure(loaded, reference)
    assert len(history) == 20
    assert {"reward", "kl", "clip_fraction", "value_loss", "approx_kl", "reply_length"} <= set(history[0])
    assert history[0]["approx_kl"] < 0.05 and history[0]["kl"] < 0.5  # starts on the reference
    assert sum(h["reward"] for h in history[-5:]) > sum(h["reward"] for h in history[:5])
    assert share_after > share_before + 0.25  # 0.31 -> 0.91
    assert kl < 15.0  # 4.3 nats per reply


def test_ppo_with_lora_uses_the_disabled_adapter_as_reference(world):
    seed_everything(2)
    loaded = world.fresh_policy()
    lora.apply_lora(loaded.model, rank=8, alpha=16, targets=lora.ATTENTION_TARGETS + lora.MLP_TARGETS)
    share_before, _ = world.measure(loaded, None)
    value = copy.deepcopy(world.reward_model)
    engine = LLMEngine(loaded, max_batch_size=64)
    config = PPOConfig(steps=8, prompts_per_step=16, samples_per_prompt=2, max_new_tokens=MAX_NEW, lr=3e-3,
                       value_lr=1e-3, kl_beta=0.05, minibatch_rows=16, temperature=1.0)
    trainer = PPOTrainer(loaded.model, value, world.reward_model, engine, config, world.accelerator, 0)
    trainer.train(world.train_prompts)
    share_after, kl = world.measure(loaded, None)
    assert share_after > share_before + 0.2  # 0.31 -> 0.87
    assert kl < 15.0  # 3.1
    with lora.disabled(loaded.model):
        base = world.fresh_policy().model
        ids = torch.tensor([world.eval_prompts[0].prompt_ids])
        assert torch.allclose(loaded.model(ids), base(ids), atol=1e-5)


def test_rloo_raises_the_preferred_behaviour_with_bounded_kl(world):
    from trainer.rloo import RLOOConfig, RLOOTrainer

    seed_everything(4)
    loaded = world.fresh_policy()
    lora.apply_lora(loaded.model, rank=8, alpha=16, targets=lora.ATTENTION_TARGETS + lora.MLP_TARGETS)
    share_before, _ = world.measure(loaded, None)
    engine = LLMEngine(loaded, max_batch_size=64)
    config = RLOOConfig(steps=8, prompts_per_step=16, samples_per_prompt=4, max_new_tokens=MAX_NEW, lr=3e-3,
                        kl_beta=0.05, minibatch_rows=16, temperature=1.0)
    trainer = RLOOTrainer(loaded.model, world.reward_model, engine, config, world.accelerator, 0)
    history = trainer.train(world.train_prompts)
    share_after, kl = world.measure(loaded, None)
    assert len(history) == 8 and "value_loss" not in history[0]
    assert history[0]["clip_fraction"] < 0.2  # one epoch: only earlier minibatches moved the policy
    assert share_after > share_before + 0.2
    assert kl < 15.0


def test_dpo_raises_the_preferred_behaviour_with_bounded_kl(world):
    seed_everything(3)
    loaded = world.fresh_policy()
    reference = copy.deepcopy(loaded.model)
    share_before, _ = world.measure(loaded, reference)
    result = train_dpo(loaded.model, world.train_groups, world.eval_groups, DPOConfig(epochs=1, lr=3e-4, beta=0.1, nll_weight=0.0),
                       world.accelerator, 0)
    share_after, kl = world.measure(loaded, reference)
    assert result.metrics["eval_accuracy"] > 0.6  # 0.75
    assert share_after > share_before + 0.15  # 0.31 -> 0.66
    assert kl < 15.0  # 4.7


def test_ppo_with_a_shared_trunk_computes_the_same_experience_and_losses(world):
    loaded = world.fresh_policy()
    # Top-layer training: the reward model shares the policy's bottom layer, its top differs.
    reward_model = ScalarHeadModel.from_policy(loaded.model)
    reward_model.body.model.layers[1].load_state_dict(world.reward_model.body.model.layers[1].state_dict())
    reward_model.head.load_state_dict(world.reward_model.head.state_dict())
    lora.freeze_except_top_layers(reward_model, 1)
    lora.apply_lora(loaded.model, rank=4, alpha=8, top_layers=1)
    with torch.no_grad():
        for m in lora.lora_modules(loaded.model):
            m.lora_b.normal_(std=0.05)  # policy != reference, so the KL terms are not all zero
    engine = LLMEngine(loaded, max_batch_size=32)
    trainers = []
    for trunk_layers in (0, 1):
        value = copy.deepcopy(reward_model)
        lora.freeze_except_top_layers(value, 1)
        value.head.requires_grad_(True)
        config = PPOConfig(lr=1e-5, samples_per_prompt=2, max_new_tokens=MAX_NEW, minibatch_rows=5, trunk_layers=trunk_layers)
        trainers.append(PPOTrainer(loaded.model, value, reward_model, engine, config, world.accelerator, 0))
    rollouts = trainers[0].rollout(world.eval_prompts[:6], seed=11)
    plain, shared = (t.make_experience(rollouts) for t in trainers)
    assert torch.allclose(plain.raw_scores, shared.raw_scores, atol=1e-5)
    for name in ("old_logprobs", "ref_logprobs", "values"):
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(getattr(plain, name), getattr(shared, name))), name
    for trainer, exp in zip(trainers, (plain, shared)):
        trainer.compute_advantages(exp)
    index = [4, 0, 7, 2, 9]
    loss_plain = trainers[0].minibatch_losses(plain, index)
    loss_shared = trainers[1].minibatch_losses(shared, index)
    assert torch.allclose(loss_plain[0], loss_shared[0], atol=1e-5)
    for key in ("policy_loss", "value_loss"):
        assert abs(loss_plain[1][key] - loss_shared[1][key]) < 1e-5, key
