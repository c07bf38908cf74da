"""`chat-tui models list|activate|rollback|remove|leaderboard` and `chat-tui ask` on the
active version: what each prints and changes, and bad input as one line that changes
nothing."""

from __future__ import annotations

import json

import pytest
from app_support import run_cli

from chat_tui.paths import database_path, ensure_data_dir, models_dir
from engine.loading import ModelStore, load_model
from feedback import Store
from tiny_models import make_tiny_model_dir

METRICS = {"heldout_learned": 0.75, "heldout_learned_low": 0.55, "heldout_learned_high": 0.9, "heldout_pairs": 12,
           "activation_reason": "it moved towards your choices on held-out feedback"}


@pytest.fixture
def lineage(tmp_path):
    """base (active) -> tuned (stored as a delta on base) -> tuned-2; and a sibling 'other'."""
    ensure_data_dir()
    model_store = ModelStore(models_dir())
    base_dir = model_store.import_model(make_tiny_model_dir(tmp_path / "src" / "base", tie_word_embeddings=True), "base")
    base = load_model(base_dir)
    state = {k: v.clone() for k, v in base.model.state_dict().items()}
    state["model.norm.weight"] += 1
    tuned_dir = model_store.save_model(base, "tuned", state_dict=state, base="base")
    tuned2_dir = model_store.save_model(base, "tuned-2", state_dict=state, base="base")
    other_dir = model_store.save_model(base, "other", state_dict=state)
    with Store(database_path()) as store:
        b = store.register_model_version("base", str(base_dir), activate=True)
        t = store.register_model_version("tuned", str(tuned_dir), source="train", parent_id=b.id, metrics=METRICS)
        store.register_model_version("tuned-2", str(tuned2_dir), source="train", parent_id=t.id)
        store.register_model_version("other", str(other_dir), source="train", parent_id=b.id)
    return {"base": base_dir, "tuned": tuned_dir}


def _active() -> str:
    with Store(database_path()) as store:
        return store.active_model_version().name


def test_list_shows_the_lineage_tree_active_mark_sizes_and_headline(lineage, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "models", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["VERSION", "SOURCE", "FILES", "CREATED"]
    rows = [line for line in lines[1:] if line.strip() and not line.rstrip("│ ").endswith(")") and "verdict" not in line]
    assert rows[0].startswith("●  base ")
    assert rows[1].startswith("   ├─ tuned ") and "(on base)" in rows[1]
    assert rows[2].startswith("   │  └─ tuned-2 ")
    assert rows[3].startswith("   └─ other ") and "(on base)" not in rows[3]
    # The headline sits under its version, inside the tree's drawing.
    assert lines[3].startswith("   │  │     learned your taste")
    assert "learned your taste: on 12 held-out comparisons it moved towards your choice in 75% (95% CI 55-90%)" in out
    assert "verdict: it moved towards your choices on held-out feedback" in out


def test_activate_and_rollback(lineage, monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "models", "activate", "tuned-2")
    assert code == 0 and out.strip() == "tuned-2 is now the active version." and _active() == "tuned-2"
    code, out, _ = run_cli(monkeypatch, capsys, "models", "rollback")
    assert code == 0 and "Rolled back from tuned-2 to its parent tuned" in out and _active() == "tuned"
    run_cli(monkeypatch, capsys, "models", "rollback")
    code, out, err = run_cli(monkeypatch, capsys, "models", "rollback")
    assert (code, err.strip(), _active()) == (1, "Error: 'base' has no parent version to roll back to", "base")


@pytest.mark.parametrize("args, message", [
    (("activate", "nope"), "Error: 'nope' is not a known model version"),
    (("remove", "base"), "Error: 'base' is the active version; activate another first (chat-tui models activate NAME)"),
    (("remove", "nope"), "Error: 'nope' is not a known model version"),
])
def test_bad_names_are_one_line_errors_that_change_nothing(lineage, monkeypatch, capsys, args, message):
    before = sorted(p.name for p in models_dir().iterdir())
    code, out, err = run_cli(monkeypatch, capsys, "models", *args)
    assert (code, err.strip(), out) == (1, message, "")
    assert sorted(p.name for p in models_dir().iterdir()) == before and _active() == "base"


def test_remove_frees_the_files_keeps_the_record_and_refuses_a_base_in_use(lineage, monkeypatch, capsys):
    run_cli(monkeypatch, capsys, "models", "activate", "other")
    code, out, err = run_cli(monkeypatch, capsys, "models", "remove", "base")
    assert code == 1 and "'base' is the base of 'tuned', 'tuned-2' (stored as changes to it); remove those first" in err
    assert lineage["base"].is_dir()
    from chat_tui.services.versions import format_size

    size = sum(f.stat().st_size for f in (models_dir() / "tuned-2").iterdir())
    code, out, err = run_cli(monkeypatch, capsys, "models", "remove", "tuned-2")
    assert code == 0 and out.strip() == f"Removed tuned-2, freeing {format_size(size)}."
    assert not (models_dir() / "tuned-2").exists()
    code, out, err = run_cli(monkeypatch, capsys, "models", "activate", "tuned-2")
    assert code == 1 and "was removed" in err and _active() == "other"
    code, out, _ = run_cli(monkeypatch, capsys, "models", "list")
    assert "tuned-2" in out and "removed" in out.split("tuned-2", 1)[1].splitlines()[0]


def test_leaderboard_from_arena_choices(lineage, monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "models", "leaderboard")
    assert code == 0 and out.startswith("No arena choices yet")
    with Store(database_path()) as store:
        base, tuned = store.get_model_version("base").id, store.get_model_version("tuned").id
        for outcome in ("first", "first", "second", "tie"):
            conversation = store.create_conversation()
            user = store.add_user_message(conversation.id, "Hello?")
            a = store.add_assistant_reply(user.id, "Hi!", tuned)
            b = store.add_assistant_reply(user.id, "Hello.", base)
            store.record_arena_choice(a.id, b.id, outcome)
    code, out, _ = run_cli(monkeypatch, capsys, "models", "leaderboard")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["#", "VERSION", "STRENGTH"]
    assert lines[1].split()[:2] == ["1", "tuned"] and lines[1].split()[-3:] == ["2", "1", "1"]
    assert lines[2].split()[:2] == ["2", "base"] and lines[2].split()[-3:] == ["1", "2", "1"]
    assert "4 arena choices" in out
    code, out, _ = run_cli(monkeypatch, capsys, "models", "list")
    assert "arena " in out and "2-1-1 won-lost-tied" in out


def test_ask_answers_with_the_active_version(lineage, monkeypatch, capsys):
    run_cli(monkeypatch, capsys, "models", "activate", "tuned")
    code, out, err = run_cli(monkeypatch, capsys, "ask", "Hi", "--json", "--max-tokens", "3", "--temperature", "0")
    assert code == 0, err
    assert json.loads(out)["model"] == "tuned"
