"""The closed loop end to end on a tiny model: the simulated user ranks and thumbs k
alternatives through the chat's store API, the real `chat-tui train` runs as a
subprocess for PPO and for DPO, and each new version answers the held-out prompts.

Asserts that the loop happened (pairs and rankings in the store, runs recorded, new
versions registered with the base as parent and answering, weights moved), not a
quality threshold: a tiny random model has no quality to speak of.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.loop.runner import LoopConfig, LoopRunner
from feedback import Store
from tiny_models import make_tiny_model_dir

NUM_TRAIN = 8
NUM_HELD_OUT = 5
K = 4
TRAIN_ARGS = ["--steps", "2", "--top-layers", "0", "--max-reply-tokens", "12"]


def run_loop(model_dir: Path, out: Path) -> dict:
    config = LoopConfig(
        out_dir=out, model=str(model_dir), k=K, max_words=4, num_train_prompts=NUM_TRAIN,
        num_held_out_prompts=NUM_HELD_OUT, max_new_tokens=12, threads=1,
        train_args={"ppo": TRAIN_ARGS, "dpo": TRAIN_ARGS},
    )
    return LoopRunner(config, echo=lambda text: None).run()


def test_loop_end_to_end(tmp_path: Path) -> None:
    model_dir = make_tiny_model_dir(tmp_path / "tiny-model")
    out = tmp_path / "out"
    results = run_loop(model_dir, out)

    store = Store(out / "home" / "feedback.db")
    base = store.get_model_version(results["base_version"]["id"])
    # Every training prompt was asked once, answered k times, and ranked: C(k, 2) pairs each.
    groups = store.preference_groups()
    assert len(groups) == NUM_TRAIN
    assert len(store.preference_pairs()) == NUM_TRAIN * K * (K - 1) // 2
    conversations = store.list_conversations()
    assert len(conversations) == NUM_TRAIN
    tree = store.load_conversation(conversations[0].id)
    user_turn = next(m for m in tree.messages.values() if m.role == "user")
    assert len(tree.children(user_turn.id)) == K
    assert all(m.model_version_id == base.id for m in tree.children(user_turn.id))
    assert results["collection"]["thumbs_up"] + results["collection"]["thumbs_down"] > 0

    runs = {run.kind: run for run in store.list_training_runs()}
    assert set(runs) == {"ppo", "dpo"}
    for algo, run in runs.items():
        assert run.status == "succeeded", run.error
        assert run.base_version_id == base.id
        version = store.get_model_version(run.result_version_id)
        assert version.source == "train" and version.parent_id == base.id
        assert Path(version.path, "model.safetensors").is_file()
        trained = results["training"][algo]
        assert trained["returncode"] == 0 and trained["version_id"] == version.id
        # The new version answered every held-out prompt, and it is not its parent.
        evaluation = results["evaluation"][algo]
        assert evaluation["version_id"] == version.id
        assert evaluation["preference_rate"]["total"] == NUM_HELD_OUT
        assert evaluation["kl_to_parent"]["num_replies"] == NUM_HELD_OUT
        assert evaluation["kl_to_parent"]["kl_per_reply"] > 0
        assert all(algo in row for row in results["held_out_replies"])
    assert len(runs["ppo"].metrics["ppo"]) == 2  # one history entry per PPO step
    assert results["training"]["dpo"]["log_curves"]["dpo"]

    saved = json.loads((out / "results.json").read_text())
    assert saved["summary"]["ppo"]["rate_before"] == results["evaluation"]["base"]["preference_rate"]["rate"]
    report = (out / "report.md").read_text()
    assert "## Held-out replies side by side" in report and "| ppo |" in report
    assert (out / "training.png").stat().st_size > 10_000
    assert [p["name"] for p in saved["phases"]] == ["setup", "collect", "train_ppo", "train_dpo", "eval_base", "eval_ppo", "eval_dpo"]
    assert all(p["peak_rss_mb"] > 0 and p["wall_s"] > 0 for p in saved["phases"])


def test_loop_is_reproducible_with_a_fixed_seed(tmp_path: Path) -> None:
    """Two runs with the same seed: the same feedback, the same held-out replies from every
    version, the same rates and KL."""
    model_dir = make_tiny_model_dir(tmp_path / "tiny-model")
    first, second = run_loop(model_dir, tmp_path / "first"), run_loop(model_dir, tmp_path / "second")
    assert first["collection"]["store"]["pairs"] == second["collection"]["store"]["pairs"] > 0
    pairs = [[(p.chosen, p.rejected) for p in Store(tmp_path / name / "home" / "feedback.db").preference_pairs()]
             for name in ("first", "second")]
    assert pairs[0] == pairs[1]
    assert first["held_out_replies"] == second["held_out_replies"]
    for name in ("base", "ppo", "dpo"):
        a, b = first["evaluation"][name], second["evaluation"][name]
        assert a["preference_rate"] == b["preference_rate"] and a["perplexity"] == b["perplexity"]
        if name != "base":
            assert a["kl_to_parent"]["kl_per_reply"] == b["kl_to_parent"]["kl_per_reply"]
