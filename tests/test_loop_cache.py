"""The candidate cache (bench/loop/candidates.py) and the simulated user's replay of it
into the chat's store: reuse on a matching key, a prefix served from a longer cache,
regeneration on any mismatch, and the store writes per taste."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.loop.candidates import PromptReplies, Reply, candidates_for, model_fingerprint
from bench.loop.prompt_set import load_prompts, split_prompts
from bench.loop.runner import chat_settings
from bench.loop.simulated_user import SimulatedUser
from bench.loop.tastes import get_taste
from feedback import Store
from tiny_models import make_tiny_model_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny")


def _get(cache: Path, model: Path, num_train: int, seed: int = 0, max_new_tokens: int = 8, num_held_out: int = 2):
    split = split_prompts(load_prompts())
    return candidates_for(cache, str(model), model_fingerprint(model), chat_settings(max_new_tokens), seed, 2,
                          split.train[:num_train], split.held_out[:num_held_out], max_batch_rows=8)


def test_cache_is_reused_on_a_match_and_serves_a_prefix(tmp_path: Path, tiny: Path) -> None:
    cache = tmp_path / "candidates.json"
    made, cached = _get(cache, tiny, 3)
    assert not cached and cache.is_file()
    assert [len(g.replies) for g in made.train] == [2, 2, 2] and len(made.held_out) == 2
    stamp = cache.stat().st_mtime_ns
    again, cached = _get(cache, tiny, 3)
    assert cached and again.as_dict() == made.as_dict()
    prefix, cached = _get(cache, tiny, 2, num_held_out=1)
    assert cached and prefix.train == made.train[:2] and prefix.held_out == made.held_out[:1]
    assert prefix.key["train_ids"] == made.key["train_ids"][:2]
    assert prefix.key["held_out_ids"] == made.key["held_out_ids"][:1]
    assert prefix.seconds == pytest.approx({"train": made.seconds["train"] * 2 / 3, "held_out": made.seconds["held_out"] / 2})
    assert cache.stat().st_mtime_ns == stamp  # read, never rewritten
    assert list(tmp_path.iterdir()) == [cache]


@pytest.mark.parametrize("change", ["seed", "longer", "max_new_tokens", "weights", "corrupt"])
def test_cache_is_regenerated_on_a_mismatch(tmp_path: Path, tiny: Path, change: str) -> None:
    cache = tmp_path / "candidates.json"
    model = make_tiny_model_dir(tmp_path / "model")
    made, _ = _get(cache, model, 2)
    kwargs = {"seed": 0, "num_train": 2, "max_new_tokens": 8}
    if change == "seed":
        kwargs["seed"] = 1
    elif change == "longer":
        kwargs["num_train"] = 3  # more prompts than the cache holds
    elif change == "max_new_tokens":
        kwargs["max_new_tokens"] = 9
    elif change == "weights":
        weights = model / "model.safetensors"
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000_000))
    else:
        cache.write_text(cache.read_text()[:-10])
    before = cache.read_text()
    remade, cached = _get(cache, model, kwargs["num_train"], kwargs["seed"], kwargs["max_new_tokens"])
    assert not cached and len(remade.train) == kwargs["num_train"]
    assert json.loads(cache.read_text())["key"] == remade.key
    if change != "corrupt":
        assert remade.key != made.key
        # The cache it replaced is kept beside it, as it was.
        assert (tmp_path / "candidates.replaced-1.json").read_text() == before


def _group(prompt_id: str, prompt: str, texts: list[str]) -> PromptReplies:
    return PromptReplies(prompt_id, prompt, [Reply(t, "stop", len(t.split())) for t in texts])


def test_simulated_user_ranks_thumbs_and_teaches_through_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "feedback.db")
    version = store.register_model_version("base", str(tmp_path), source="import", activate=True)
    taste = get_taste("question-back")
    groups = [
        _group("a", "How do I boil an egg?", ["Boil it for nine minutes.", "Put it in water. Do you want tips?",
                                              "Eggs are nice.", "Cook it."]),
        _group("b", "What is rain?", ["Water falling from clouds.", "Rain is water.", "Drops.", "Wet weather."]),
        _group("c", "Name a colour.", ["Blue.", "Red.", "Green.", "Grey."]),
        _group("d", "Say hi.", ["Hello.", "Hi.", "Hey.", "Greetings."]),
    ]
    user = SimulatedUser(store, version.id, taste, {"temperature": 0.7, "n": 4}, max_taught=2)
    summary = user.collect(groups).as_dict()

    assert summary["prompts"] == 4 and summary["replies"] == 16 and summary["replies_satisfying"] == 1
    assert summary["taught"] == 2  # b and c; d would be the third
    trees = [store.load_conversation(c.id) for c in store.list_conversations()]
    assert len(trees) == 4
    tree = next(t for t in trees if any(m.content == "How do I boil an egg?" for m in t.messages.values()))
    user_turn = next(m for m in tree.messages.values() if m.role == "user")
    replies = tree.children(user_turn.id)
    assert [m.content for m in replies] == [r.text for r in groups[0].replies]  # stored in sample order
    assert all(m.model_version_id == version.id and m.finish_reason == "stop" for m in replies)
    # Ranked best first: the one that satisfies the taste, then the sample order.
    assert tree.rankings[user_turn.id].ranked_ids == [replies[i].id for i in (1, 0, 2, 3)]
    assert tree.shown_path[-1].id == replies[1].id
    assert {tree.ratings[m].value for m in tree.ratings} == {+1, -1}
    assert tree.ratings[replies[1].id].value == +1 and tree.ratings[replies[3].id].value == -1
    demonstrations = [d for d in store.demonstrations() if d.source == "human"]
    assert [d.prompt for d in demonstrations] == ["What is rain?", "Name a colour."]
    assert all(taste.satisfied(d.completion) for d in demonstrations)
    # The user edited the best of b's replies and shows their own.
    assert demonstrations[0].completion.startswith("Water falling from clouds.")
    pairs = store.preference_pairs()
    assert sum(p.source == "ranking" for p in pairs) == 4 * 6
    # Each taught reply over every model reply the user did not vote up (none of them).
    assert sum(p.source == "demonstration" for p in pairs) == 2 * 4
