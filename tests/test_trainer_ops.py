"""trainer/ops.py against numbers worked out by hand (in the comments next to each)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer import ops

LN2 = math.log(2.0)


def close(actual: torch.Tensor, expected, tol: float = 1e-5) -> None:
    expected = torch.as_tensor(expected, dtype=torch.float32)
    assert torch.allclose(actual.float(), expected, atol=tol), f"{actual} != {expected}"


# ---------------------------------------------------------------------------------------
# Shift and gather


def probs_to_logits(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows).log()[None]  # (1, T, V)


def test_shifted_logprobs_take_logits_at_t_for_token_t_plus_1():
    # Position 0 predicts token 1, position 1 predicts token 2; position 2 predicts nothing.
    logits = probs_to_logits([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    ids = torch.tensor([[0, 2, 1]])
    got = ops.shifted_token_logprobs(logits, ids)
    # col 0: p_row0(token 2) = 0.25 ; col 1: p_row1(token 1) = 0.6.
    # (Off by one the other way would give p_row1(2)=0.3, p_row2(1)=0.2; unshifted 0.5, 0.3.)
    close(got, [[math.log(0.25), math.log(0.6)]])


def test_gather_logprobs_divides_logits_by_temperature():
    # logits [0, ln 4] at T=2 -> [0, ln 2] -> probs [1/3, 2/3].
    logits = torch.tensor([[0.0, math.log(4.0)]])
    close(ops.gather_logprobs(logits, torch.tensor([1]), temperature=2.0), [math.log(2 / 3)])
    close(ops.gather_logprobs(logits, torch.tensor([1]), temperature=1.0), [math.log(4 / 5)])
    with pytest.raises(ValueError):
        ops.gather_logprobs(logits, torch.tensor([1]), temperature=0.0)


def test_gather_logprobs_in_float32_from_bf16_logits():
    logits = torch.tensor([[0.0, math.log(4.0)]]).bfloat16()
    out = ops.gather_logprobs(logits, torch.tensor([1]))
    assert out.dtype == torch.float32


def test_entropy_from_logits():
    # probs [0.5, 0.25, 0.25]: H = 0.5 ln 2 + 2 * 0.25 ln 4 = 1.5 ln 2.
    logits = torch.tensor([0.5, 0.25, 0.25]).log()
    close(ops.entropy_from_logits(logits), 1.5 * LN2)
    # Uniform over 4: ln 4, whatever the temperature.
    close(ops.entropy_from_logits(torch.zeros(4), temperature=0.3), 2 * LN2)


# ---------------------------------------------------------------------------------------
# Masks


def test_reply_and_action_masks_include_eos_and_exclude_prompt_and_padding():
    # Row 0: [p p r r eos pad pad]  prompt 2, reply 3 (eos is the reply's last token).
    # Row 1: [p p p eos pad pad pad] prompt 3, reply 1.
    prompt = torch.tensor([2, 3])
    reply = torch.tensor([3, 1])
    close(ops.reply_token_mask(prompt, reply, 7), [[0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 1, 0, 0, 0]])
    # Shifted grid: column j predicts token j+1.
    close(ops.action_mask(prompt, reply, 7), [[0, 1, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0]])
    close(ops.padding_mask(prompt + reply, 7), [[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0, 0]])


def test_masked_reply_logprob_sums_exactly_the_reply_tokens_including_eos():
    # Vocab 4; sequence [3, 1, 2, 0(eos), pad=3]; prompt = [3, 1], reply = [2, 0].
    probs = [
        [0.25, 0.25, 0.25, 0.25],  # after 3: predicts 1 (prompt token, excluded)
        [0.1, 0.2, 0.3, 0.4],  # after 3 1: predicts 2 -> 0.3 (reply)
        [0.5, 0.1, 0.1, 0.3],  # after 3 1 2: predicts 0 = eos -> 0.5 (reply)
        [0.7, 0.1, 0.1, 0.1],  # after eos: predicts pad (excluded)
        [0.25, 0.25, 0.25, 0.25],  # last position predicts nothing
    ]
    logits = probs_to_logits(probs)
    ids = torch.tensor([[3, 1, 2, 0, 3]])
    mask = ops.action_mask(torch.tensor([2]), torch.tensor([2]), 5)
    total = ops.sequence_logprobs(ops.shifted_token_logprobs(logits, ids), mask)
    close(total, [math.log(0.3) + math.log(0.5)])


def test_last_index():
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1]])
    assert ops.last_index(mask).tolist() == [2, -1, 3]


# ---------------------------------------------------------------------------------------
# Masked statistics


def test_masked_mean_and_whiten_ignore_masked_positions():
    x = torch.tensor([2.0, 4.0, 6.0, 100.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    close(ops.masked_mean(x, mask), 4.0)
    # mean 4, unbiased var (4 + 0 + 4) / 2 = 4, std 2 -> [-1, 0, 1], masked 0.
    close(ops.masked_var(x, mask), 4.0)
    close(ops.masked_whiten(x, mask), [-1.0, 0.0, 1.0, 0.0])
    close(ops.masked_whiten(x, mask, shift_mean=False), [3.0, 4.0, 5.0, 0.0])


def test_masked_mean_along_dim_and_empty_mask():
    x = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    close(ops.masked_mean(x, mask, dim=1), [2.0, 7.0])
    close(ops.masked_mean(x, torch.zeros(2, 2)), 0.0)


# ---------------------------------------------------------------------------------------
# KL


def test_kl_estimators():
    half, quarter = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    # Policy more likely than the reference: k1 = ln 0.5 - ln 0.25 = ln 2.
    close(ops.kl_k1(half, quarter), [LN2])
    # k3 with r = ref/pi = 0.5: (0.5 - 1) - ln 0.5 = -0.5 + 0.693147 = 0.193147.
    close(ops.kl_k3(half, quarter), [-0.5 + LN2])
    # Policy less likely: k1 = -ln 2 (can be negative), k3 with r = 2: 1 - ln 2 = 0.306853.
    close(ops.kl_k1(quarter, half), [-LN2])
    close(ops.kl_k3(quarter, half), [1.0 - LN2])
    close(ops.kl_k3(half, half), [0.0])


def test_kl_penalty_is_subtracted_and_score_lands_on_last_reply_token():
    logp = torch.tensor([[9.0, -1.0, -2.0, 9.0]])
    ref = torch.tensor([[0.0, -1.5, -1.0, 0.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    rewards, kl = ops.kl_penalised_rewards(torch.tensor([2.0]), logp, ref, mask, beta=0.1)
    # kl = [0, -1 - -1.5, -2 - -1, 0] = [0, 0.5, -1, 0]
    close(kl, [[0.0, 0.5, -1.0, 0.0]])
    # rewards = -0.1 * kl, plus score 2.0 at column 2 (the last reply token).
    close(rewards, [[0.0, -0.05, 2.1, 0.0]])


# ---------------------------------------------------------------------------------------
# GAE


def test_gae_four_steps_gamma_1_lambda_095():
    r = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.4, 0.3, 0.2]])
    # delta3 = 1 + 0 - 0.2 = 0.8                  A3 = 0.8
    # delta2 = 0 + 0.2 - 0.3 = -0.1               A2 = -0.1 + 0.95 * 0.8   = 0.66
    # delta1 = 0 + 0.3 - 0.4 = -0.1               A1 = -0.1 + 0.95 * 0.66  = 0.527
    # delta0 = 0 + 0.4 - 0.5 = -0.1               A0 = -0.1 + 0.95 * 0.527 = 0.40065
    adv, ret = ops.gae(r, v, torch.ones(1, 4), gamma=1.0, lam=0.95)
    close(adv, [[0.40065, 0.527, 0.66, 0.8]])
    close(ret, [[0.90065, 0.927, 0.96, 1.0]])


def test_gae_four_steps_gamma_09_lambda_05():
    r = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.4, 0.3, 0.2]])
    # delta3 = 1 - 0.2 = 0.8                      A3 = 0.8
    # delta2 = 0.9*0.2 - 0.3 = -0.12              A2 = -0.12 + 0.45 * 0.8    = 0.24
    # delta1 = 0.9*0.3 - 0.4 = -0.13              A1 = -0.13 + 0.45 * 0.24   = -0.022
    # delta0 = 0.9*0.4 - 0.5 = -0.14              A0 = -0.14 + 0.45 * -0.022 = -0.1499
    adv, _ = ops.gae(r, v, torch.ones(1, 4), gamma=0.9, lam=0.5)
    close(adv, [[-0.1499, -0.022, 0.24, 0.8]])


def test_gae_lambda_1_gives_monte_carlo_returns():
    r = torch.tensor([[0.1, -0.2, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.4, 0.3, 0.2]])
    adv, ret = ops.gae(r, v, torch.ones(1, 4), gamma=1.0, lam=1.0)
    close(ret, [[0.9, 0.8, 1.0, 1.0]])  # sums of rewards to go
    close(adv, [[0.4, 0.4, 0.7, 0.8]])


def test_gae_respects_mask_and_bootstraps_zero_after_the_last_reply_token():
    # Same 4-step episode at columns 1..4; columns 0 and 5 are prompt / padding with
    # garbage values that must not leak in (column 5's value 9 must not be bootstrapped).
    r = torch.tensor([[7.0, 0.0, 0.0, 0.0, 1.0, 7.0]])
    v = torch.tensor([[9.0, 0.5, 0.4, 0.3, 0.2, 9.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    adv, ret = ops.gae(r, v, mask, gamma=1.0, lam=0.95)
    close(adv, [[0.0, 0.40065, 0.527, 0.66, 0.8, 0.0]])
    close(ret, [[0.0, 0.90065, 0.927, 0.96, 1.0, 0.0]])


# ---------------------------------------------------------------------------------------
# PPO losses


def test_clipped_policy_loss_values_gradients_and_stats():
    ratios = torch.tensor([1.5, 0.5, 1.5, 0.5, 2.0])
    old = torch.zeros(5)
    logp = ratios.log().requires_grad_(True)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 100.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    loss, stats = ops.clipped_policy_loss(logp, old, adv, mask, clip=0.2)
    # t0: A=+1 r=1.5: max(-1.5, -1.2) = -1.2  (clipped)
    # t1: A=+1 r=0.5: max(-0.5, -0.8) = -0.5
    # t2: A=-1 r=1.5: max( 1.5,  1.2) =  1.5
    # t3: A=-1 r=0.5: max( 0.5,  0.8) =  0.8  (clipped)
    # t4: masked out.  loss = (-1.2 - 0.5 + 1.5 + 0.8) / 4 = 0.15
    close(loss, 0.15)
    close(stats["clip_fraction"], 0.5)
    # approx KL (k3 of old vs new): r - 1 - ln r: 1.5 -> 0.094535, 0.5 -> 0.193147
    close(stats["approx_kl"], (2 * (0.5 - math.log(1.5)) + 2 * (-0.5 + LN2)) / 4)
    loss.backward()
    # d/dlogp of -A r / 4 = -A r / 4 where unclipped; 0 where clipped or masked.
    close(logp.grad, [0.0, -0.125, 0.375, 0.0, 0.0])


def test_policy_loss_before_any_update_is_minus_mean_advantage():
    adv = torch.tensor([0.3, -0.1, 0.4])
    logp = torch.tensor([-1.0, -2.0, -3.0])
    loss, stats = ops.clipped_policy_loss(logp, logp.clone(), adv, torch.ones(3))
    close(loss, -0.2)
    close(stats["clip_fraction"], 0.0)
    close(stats["approx_kl"], 0.0)


def test_clipped_value_loss():
    old = torch.tensor([0.0, 0.0, 1.0, 5.0])
    new = torch.tensor([0.5, 0.1, 0.5, 5.0])
    returns = torch.tensor([1.0, 1.0, 0.0, 0.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    loss, stats = ops.clipped_value_loss(new, old, returns, mask, clip=0.2)
    # t0: clipped V 0.2: max((0.5-1)^2=0.25, (0.2-1)^2=0.64) = 0.64 (clipped)
    # t1: within clip: 0.81
    # t2: clipped V 0.8: max(0.25, 0.64) = 0.64 (clipped)
    # loss = 0.5 * (0.64 + 0.81 + 0.64) / 3 = 0.348333
    close(loss, 0.5 * 2.09 / 3)
    close(stats["value_clip_fraction"], 2 / 3)


# ---------------------------------------------------------------------------------------
# Preference losses


def test_bradley_terry_loss_and_accuracy():
    loss, acc = ops.bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))
    # margins [2, -1]: ln(1 + e^-2) = 0.126928, ln(1 + e^1) = 1.313262; mean 0.720095
    close(loss, (math.log1p(math.exp(-2)) + math.log1p(math.e)) / 2)
    close(acc, 0.5)
    # Weights 3 and 1: (3 * 0.126928 + 1.313262) / 4 = 0.423012
    weighted, _ = ops.bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([3.0, 1.0]))
    close(weighted, (3 * math.log1p(math.exp(-2)) + math.log1p(math.e)) / 4)


def test_dpo_loss():
    pc, pr = torch.tensor([-10.0]), torch.tensor([-12.0])
    rc, rr = torch.tensor([-11.0]), torch.tensor([-11.0])
    loss, m = ops.dpo_loss(pc, pr, rc, rr, beta=0.5)
    # chosen reward 0.5 * 1 = 0.5, rejected 0.5 * -1 = -0.5, z = 1: ln(1 + e^-1) = 0.313262
    close(loss, math.log1p(math.exp(-1)))
    close(m["chosen_reward"], 0.5)
    close(m["rejected_reward"], -0.5)
    close(m["reward_margin"], 1.0)
    close(m["accuracy"], 1.0)
    # label smoothing 0.1: 0.9 * 0.313262 + 0.1 * ln(1 + e) = 0.413262
    smoothed, _ = ops.dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.1)
    close(smoothed, 0.9 * math.log1p(math.exp(-1)) + 0.1 * math.log1p(math.e))
    # Policy equal to the reference: ln 2.
    same, _ = ops.dpo_loss(rc, rr, rc, rr, beta=0.5)
    close(same, LN2)


def test_dpo_gradient_pushes_chosen_up_and_rejected_down():
    pc = torch.tensor([-10.0], requires_grad=True)
    pr = torch.tensor([-10.0], requires_grad=True)
    loss, _ = ops.dpo_loss(pc, pr, torch.tensor([-10.0]), torch.tensor([-10.0]), beta=0.5)
    loss.backward()
    # dL/dz = -sigmoid(-z) = -0.5 at z = 0; dz/dpc = beta, dz/dpr = -beta.
    close(pc.grad, [-0.25])
    close(pr.grad, [0.25])


# ---------------------------------------------------------------------------------------
# KL controllers


def test_adaptive_kl_controller():
    ctl = ops.AdaptiveKLController(init_beta=0.1, target=6.0, horizon=1000)
    # KL 9 vs target 6: error 0.5, clamped to 0.2; 100 steps: beta * (1 + 0.2 * 0.1) = 0.102
    assert ctl.update(9.0, 100) == pytest.approx(0.102)
    # KL 3: error -0.5 -> -0.2: 0.102 * 0.98 = 0.09996
    assert ctl.update(3.0, 100) == pytest.approx(0.09996)
    # On target: unchanged.
    assert ctl.update(6.0, 100) == pytest.approx(0.09996)
    assert ops.FixedKLController(0.05).update(100.0, 100) == 0.05


def test_kto_loss_by_hand():
    # Two rows: desirable with r = -8 - (-10) = 2, undesirable with r = -9 - (-10) = 1.
    policy, reference = torch.tensor([-8.0, -9.0]), torch.tensor([-10.0, -10.0])
    labels = torch.tensor([1, -1])
    # z0 = max(0, mean(2, 1)) = 1.5
    z0 = ops.kto_reference_point(policy, reference)
    close(z0, 1.5)
    loss, m = ops.kto_loss(policy, reference, labels, z0, beta=0.5, desirable_weight=1.0, undesirable_weight=2.0)
    # desirable: 1 - sigmoid(0.5 * (2 - 1.5)) = 1 - sigmoid(0.25) = 0.437823
    # undesirable: 2 * (1 - sigmoid(0.5 * (1.5 - 1))) = 2 * 0.437823 = 0.875647; mean 0.656735
    desirable = 1 - 1 / (1 + math.exp(-0.25))
    close(loss, (desirable + 2 * desirable) / 2)
    close(m["kto_accuracy"], 1.0)  # both rows on their side of z0


def test_kto_reference_point_is_floored_at_zero_and_detached():
    policy = torch.tensor([-12.0, -11.0], requires_grad=True)
    z0 = ops.kto_reference_point(policy, torch.tensor([-10.0, -10.0]))
    close(z0, 0.0)  # mean implicit reward -1.5 < 0
    assert not z0.requires_grad
    loss, _ = ops.kto_loss(policy, torch.tensor([-10.0, -10.0]), torch.tensor([1, -1]), z0, beta=1.0)
    loss.backward()
    # d/dr of (1 - sigmoid(r)) / 2 is -s(1-s)/2 at r = -2; of (1 - sigmoid(-r)) / 2 is +s(1-s)/2 at r = -1.
    s2, s1 = 1 / (1 + math.exp(2)), 1 / (1 + math.exp(1))
    close(policy.grad, [-s2 * (1 - s2) / 2, s1 * (1 - s1) / 2])


def test_leave_one_out_and_group_normalized_advantages_by_hand():
    scores = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 0.0]])
    # 1 - (2 + 6) / 2 = -3; 2 - (1 + 6) / 2 = -1.5; 6 - 1.5 = 4.5
    close(ops.leave_one_out_advantages(scores), [[-3.0, -1.5, 4.5], [0.0, 0.0, 0.0]])
    # mean 3, unbiased std sqrt(((-2)^2 + 1 + 9) / 2) = sqrt(7)
    close(ops.group_normalized_advantages(scores)[0], [(x - 3) / (math.sqrt(7) + 1e-6) for x in (1, 2, 6)])
    close(ops.group_normalized_advantages(scores)[1], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="at least 2 samples"):
        ops.leave_one_out_advantages(torch.tensor([[1.0]]))
