"""The closed loop end to end on a tiny model: the simulated user ranks, thumbs and
teaches through the chat's store API, the real `chat-tui train` runs as a subprocess
for PPO and for DPO, and each new version answers the held-out prompts; `matrix` runs
two tastes on one candidate cache and writes one table.

Asserts that the loop happened (pairs, rankings and taught replies in the store, runs
recorded, new versions registered with the base as parent and answering, weights
moved), not a quality threshold: a tiny random model has no quality to speak of.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.loop.matrix import run_matrix
from bench.loop.runner import LoopConfig, LoopRunner
from bench.loop.tastes import get_taste
from feedback import Store
from tiny_models import make_tiny_model_dir

NUM_TRAIN = 8
NUM_HELD_OUT = 5
K = 4
MAX_TAUGHT = 3
TASTE = "question-back"  # a tiny random model almost never ends on a question: the user teaches
TRAIN_ARGS = ["--steps", "2", "--top-layers", "0", "--max-reply-tokens", "12"]


def loop_config(model_dir: Path, out: Path, **changes) -> LoopConfig:
    changes.setdefault("algos", ("ppo", "dpo"))
    return LoopConfig(
        out_dir=out, model=str(model_dir), taste=TASTE, k=K, max_taught=MAX_TAUGHT, num_train_prompts=NUM_TRAIN,
        num_held_out_prompts=NUM_HELD_OUT, max_new_tokens=12, threads=1,
        train_args={"ppo": TRAIN_ARGS, "dpo": TRAIN_ARGS}, **changes,
    )


def run_loop(model_dir: Path, out: Path) -> dict:
    return LoopRunner(loop_config(model_dir, out), echo=lambda text: None).run()


def test_loop_end_to_end(tmp_path: Path) -> None:
    model_dir = make_tiny_model_dir(tmp_path / "tiny-model")
    out = tmp_path / "out"
    results = run_loop(model_dir, out)

    store = Store(out / "home" / "feedback.db")
    base = store.get_model_version(results["base_version"]["id"])
    # Every training prompt was asked once, answered k times, and ranked: C(k, 2) pairs each
    # (and each taught reply over every one of its prompt's K model replies: a taught
    # prompt is one where none pleased, so none was voted up).
    groups = store.preference_groups()
    assert len(groups) == NUM_TRAIN
    pairs = store.preference_pairs()
    assert sum(p.source == "ranking" for p in pairs) == NUM_TRAIN * K * (K - 1) // 2
    assert sum(p.source == "demonstration" for p in pairs) == results["collection"]["taught"] * K
    conversations = store.list_conversations()
    assert len(conversations) == NUM_TRAIN
    tree = store.load_conversation(conversations[0].id)
    user_turn = next(m for m in tree.messages.values() if m.role == "user")
    assert len(tree.children(user_turn.id)) == K
    assert all(m.model_version_id == base.id for m in tree.children(user_turn.id) if not m.is_human)
    assert results["collection"]["thumbs_up"] + results["collection"]["thumbs_down"] > 0
    # The user wrote the reply they wanted for the first prompts none of whose k replies
    # pleased them, at most MAX_TAUGHT of them, and each satisfies the taste.
    candidates = json.loads((out / "candidates.json").read_text())["train"]
    taste = get_taste(TASTE)
    unpleased = [g["prompt_text"] for g in candidates if not any(taste.satisfied(r["text"]) for r in g["replies"])]
    demonstrations = [d for d in store.demonstrations() if d.source == "human"]
    assert len(demonstrations) == results["collection"]["taught"] == min(MAX_TAUGHT, len(unpleased)) > 0
    assert [d.prompt for d in demonstrations] == unpleased[:MAX_TAUGHT]
    assert all(taste.satisfied(d.completion) for d in demonstrations)

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
    assert [p["name"] for p in saved["phases"]] == [
        "setup", "candidates", "collect", "train_ppo", "train_dpo", "eval_base", "eval_ppo", "eval_dpo"]
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


def test_matrix_runs_two_tastes_on_one_candidate_cache(tmp_path: Path) -> None:
    model_dir = make_tiny_model_dir(tmp_path / "tiny-model")
    out = tmp_path / "matrix"
    config = loop_config(model_dir, out, algos=("dpo",))
    run_matrix(config, ["short", TASTE], echo=lambda text: None)

    rows = json.loads((out / "matrix.json").read_text())["rows"]
    assert [(r["taste"], r["algo"]) for r in rows] == [("short", "dpo"), (TASTE, "dpo")]
    short, question = (json.loads((out / name / "results.json").read_text()) for name in ("short", TASTE))
    # Sampled once, judged twice: the same candidates and base replies, another verdict.
    assert not short["candidates"]["cached"] and question["candidates"]["cached"]
    assert short["held_out_replies"][0]["base"] == question["held_out_replies"][0]["base"]
    for result, row in zip((short, question), rows):
        assert row["rate_before"] == result["evaluation"]["base"]["preference_rate"]["rate"]
        assert row["median_words_before"] == result["evaluation"]["base"]["median_words"]
        assert row["train_s"] > 0 and row["kl_per_reply"] > 0
        assert row["is_about_length"] == (result["taste"]["name"] == "short")
    assert (out / "matrix.md").read_text().count("| dpo |") == 2

    # Resumed, nothing is run again and the table is the same.
    before = (out / "matrix.md").read_text()
    stamps = [(out / name / "results.json").stat().st_mtime_ns for name in ("short", TASTE)]
    run_matrix(config, ["short", TASTE], resume=True, echo=lambda text: None)
    assert (out / "matrix.md").read_text() == before
    assert [(out / name / "results.json").stat().st_mtime_ns for name in ("short", TASTE)] == stamps
