"""Feedback in the formats other tools use: Open WebUI's feedback export in, TRL's
conversational preference and KTO rows out; importing the same file twice adds nothing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from chat_tui.cli import cli
from chat_tui.paths import database_path
from feedback import ImportFormatError, ReplyDraft, Store
from feedback.exporting import export_rows


def _chat(messages: list[dict], system: str | None = None) -> dict:
    """An Open WebUI chat as its API returns it: the message tree under chat.history."""
    tree = {}
    for message in messages:
        tree[message["id"]] = {"childrenIds": [], "timestamp": 1700000000, **message}
    for message in messages:
        if message.get("parentId") is not None:
            tree[message["parentId"]]["childrenIds"].append(message["id"])
    return {"id": "chat-1", "user_id": "u1", "title": "Colours", "created_at": 1700000000, "updated_at": 1700000100,
            "chat": {"id": "", "title": "Colours", "models": ["llama3", "qwen2"], "params": {"system": system} if system else {},
                     "history": {"messages": tree, "currentId": messages[-1]["id"]}}}


def _feedback(feedback_id: str, rating, message_id: str, chat: dict, siblings: list[str] | None = None, arena=False,
              **data) -> dict:
    body = {"rating": rating, "model_id": "llama3", **data}
    if siblings is not None:
        body["sibling_model_ids"] = siblings
    return {"id": feedback_id, "user_id": "u1", "version": 0, "type": "rating", "data": body,
            "meta": {"arena": arena, "chat_id": chat["id"], "message_id": message_id, "message_index": 2,
                     "model_id": "llama3", "base_models": {}},
            "snapshot": {"chat": chat}, "created_at": 1700000200, "updated_at": 1700000200}


def openwebui_export() -> list[dict]:
    """An arena comparison won by one model, an arena comparison lost, a lone thumbs down
    with a reason and tags, and an item with only a 1-10 detail rating (no thumbs)."""
    arena_chat = _chat([
        {"id": "u1", "parentId": None, "role": "user", "content": "Name a colour."},
        {"id": "a1", "parentId": "u1", "role": "assistant", "content": "Blue.", "model": "llama3"},
        {"id": "a2", "parentId": "u1", "role": "assistant", "content": "Colour.", "model": "qwen2"},
        {"id": "u2", "parentId": "a1", "role": "user", "content": "Another?"},
        {"id": "a3", "parentId": "u2", "role": "assistant", "content": "Red.", "model": "llama3"},
        {"id": "a4", "parentId": "u2", "role": "assistant", "content": "Green.", "model": "qwen2"},
    ], system="Be brief.")
    lone_chat = _chat([
        {"id": "q", "parentId": None, "role": "user", "content": "2+2?"},
        {"id": "r", "parentId": "q", "role": "assistant", "content": "5", "model": "llama3"},
    ])
    return [
        _feedback("fb-1", 1, "a1", arena_chat, ["qwen2"], arena=True, reason="Accurate information", comment=""),
        _feedback("fb-2", -1, "a3", arena_chat, ["qwen2"], arena=True, comment="green is nicer"),
        _feedback("fb-3", -1, "r", lone_chat, reason="Inaccurate information", tags=["math"], comment="it is 4",
                  details={"rating": 2}),
        _feedback("fb-4", None, "r", lone_chat, details={"rating": 7}),
    ]


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "feedback.db") as opened:
        yield opened


def test_openwebui_arena_comparisons_become_pairs_and_thumbs_become_lone_ratings(store, tmp_path):
    path = tmp_path / "feedback-export.json"
    path.write_text(json.dumps(openwebui_export()))
    result = store.import_openwebui(path)
    assert (result.num_pairs, result.num_judgments, result.num_skipped) == (2, 1, 1)
    pairs = {(p.chosen, p.rejected): p.context for p in store.preference_pairs()}
    assert set(pairs) == {("Blue.", "Colour."), ("Green.", "Red.")}
    assert pairs[("Blue.", "Colour.")] == [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Name a colour."}]
    assert pairs[("Green.", "Red.")][1:] == [{"role": "user", "content": "Name a colour."},
                                            {"role": "assistant", "content": "Blue."},
                                            {"role": "user", "content": "Another?"}]
    (judgment,) = store.training_data().judgments
    assert (judgment.context, judgment.completion, judgment.label) == ([{"role": "user", "content": "2+2?"}], "5", -1)
    rating = store.load_conversation(judgment.conversation_id).ratings[judgment.message_id]
    assert (rating.tags, rating.comment) == (["math"], "it is 4")


def test_importing_the_same_file_twice_adds_nothing(store, tmp_path):
    path = tmp_path / "feedback-export.json"
    path.write_text(json.dumps(openwebui_export()))
    store.import_openwebui(path)
    before = store.stats().counts
    again = store.import_openwebui(path)
    assert (again.num_pairs, again.num_judgments, again.num_known) == (0, 0, 3)
    assert store.stats().counts == before
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text(json.dumps({"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."}) + "\n")
    assert store.import_pairs(pairs_file).num_pairs == 1
    assert (store.import_pairs(pairs_file).num_pairs, store.import_pairs(pairs_file).num_known) == (0, 1)


@pytest.mark.parametrize("bad_item, message", [
    (1, "item 2: is int, not an object"),
    ({"id": "x", "data": {"rating": 1}}, "item 2: has no 'meta.message_id'"),
    ({"id": "x", "data": {"rating": "great"}, "meta": {"message_id": "a"}}, "item 2: 'data.rating' is 'great', not 1 or -1"),
    ({"id": "x", "data": {"rating": 1}, "meta": {"message_id": "a"}, "snapshot": {}}, "item 2: has no 'snapshot.chat.chat'"),
])
def test_an_openwebui_item_of_the_wrong_shape_is_named_and_nothing_is_imported(store, tmp_path, bad_item, message):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([openwebui_export()[0], bad_item]))
    with pytest.raises(ImportFormatError, match=message):
        store.import_openwebui(path)
    assert store.stats().counts["imported_conversations"] == 0


def test_a_lone_surrogate_in_an_openwebui_message_is_named_and_nothing_is_imported(store, tmp_path):
    text = json.dumps(openwebui_export())
    first_reply = openwebui_export()[0]["snapshot"]["chat"]["chat"]["history"]["messages"]
    content = next(m["content"] for m in first_reply.values() if m["role"] == "assistant")
    path = tmp_path / "export.json"
    path.write_text(text.replace(json.dumps(content)[1:-1], "\\udc80" + json.dumps(content)[1:-1], 1))
    with pytest.raises(ImportFormatError, match="lone surrogate"):
        store.import_openwebui(path)
    assert store.stats().counts["imported_conversations"] == 0


@pytest.mark.parametrize("content, message", [
    ('{"id": "fb-1"}', "an Open WebUI feedback export is a JSON array, this is a dict"),
    ("[{]", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
])
def test_a_file_that_is_not_an_openwebui_export_is_refused(store, tmp_path, content, message):
    path = tmp_path / "export.json"
    path.write_text(content)
    with pytest.raises(ImportFormatError, match=message):
        store.import_openwebui(path)


def _ranked_store(store):
    conversation = store.create_conversation(system_prompt="Be brief.")
    user = store.add_user_message(conversation.id, "Best pet?")
    a, b, c = store.add_assistant_replies(user.id, [ReplyDraft("Cat."), ReplyDraft("Dog."), ReplyDraft("Rock.")])
    store.rank(user.id, [a.id, b.id, c.id])
    other = store.add_user_message(conversation.id, "Why?")
    lone = store.add_assistant_reply(other.id, "Because.")
    store.rate(lone.id, -1)
    return user


def test_trl_rows_are_conversational_preference_rows(store):
    _ranked_store(store)
    rows = list(export_rows(store, "trl"))
    assert len(rows) == 3
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Best pet?"}]
    assert rows[0] == {"prompt": prompt, "chosen": [{"role": "assistant", "content": "Cat."}],
                       "rejected": [{"role": "assistant", "content": "Dog."}]}


def test_kto_rows_label_each_reply_once_and_leave_out_the_middle_of_a_ranking(store):
    _ranked_store(store)
    rows = {row["completion"][0]["content"]: row for row in export_rows(store, "kto")}
    assert {text: row["label"] for text, row in rows.items()} == {"Cat.": True, "Rock.": False, "Because.": False}
    assert rows["Because."]["prompt"][-1] == {"role": "user", "content": "Why?"}
    assert set(rows["Cat."]) == {"prompt", "completion", "label"}


def test_cli_imports_openwebui_by_shape_and_exports_trl_and_kto(tmp_path, chat_tui_home):
    path = tmp_path / "feedback-export.json"
    path.write_text(json.dumps(openwebui_export(), indent=2))
    runner = CliRunner()
    result = runner.invoke(cli, ["feedback", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert "Imported 2 preference pairs and 1 lone ratings" in result.output
    result = runner.invoke(cli, ["feedback", "import", str(path)])
    assert "Imported 0 preference pairs and 0 lone ratings" in result.output and "3 already imported" in result.output
    result = runner.invoke(cli, ["feedback", "export", "--format", "trl"])
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 2 and all(row["chosen"][0]["role"] == "assistant" for row in rows)
    result = runner.invoke(cli, ["feedback", "export", "--format", "kto"])
    labels = {json.loads(line)["completion"][0]["content"]: json.loads(line)["label"] for line in result.output.splitlines()}
    assert labels == {"Blue.": True, "Colour.": False, "Green.": True, "Red.": False, "5": False}


def test_cli_wrong_shape_is_one_line_exit_1_and_nothing_changed(tmp_path, chat_tui_home, capsys, monkeypatch):
    import sys

    from chat_tui.cli import main

    bad = tmp_path / "export.json"
    bad.write_text(json.dumps([openwebui_export()[0], {"id": "x", "data": {"rating": 1}}]))
    monkeypatch.setattr(sys, "argv", ["chat-tui", "feedback", "import", str(bad)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error:") and "item 2" in err and "'meta.message_id'" in err and "\n" not in err
    with Store(database_path()) as store:
        assert store.stats().counts["imported_conversations"] == 0
