"""Import and export of feedback (the store API and the `chat-tui feedback` commands)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from chat_tui.cli import cli
from chat_tui.paths import database_path
from feedback import ImportFormatError, ReplyDraft, Store
from feedback.exporting import export_rows, export_to_file


def _write_jsonl(path, rows) -> None:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))


def _count(store: Store, table: str) -> int:
    return store._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


CHAT_SO_FAR = [
    {"role": "system", "content": "Be helpful."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": "Really?"},
]
# Two whole chats that differ in their last reply only, as chat-list datasets store them.
CHAT_LIST_PAIR = {
    "chosen": CHAT_SO_FAR + [{"role": "assistant", "content": "Sorry: 4."}],
    "rejected": CHAT_SO_FAR + [{"role": "assistant", "content": "Yes, 5."}],
}


def test_import_common_and_chat_list_shapes(tmp_path):
    path = tmp_path / "pairs.jsonl"
    _write_jsonl(path, [
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
        "",  # blank lines are allowed
        CHAT_LIST_PAIR,
        # prompt given as a string, replies as one-message lists (UltraFeedback-like)
        {"prompt": "Hi", "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
         "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}]},
        {"prompt": [{"role": "user", "content": "Pick"}], "chosen": "A", "rejected": "B"},
        {"prompt": "same", "chosen": "x", "rejected": "x"},  # says nothing: skipped
    ])
    with Store(tmp_path / "feedback.db") as store:
        result = store.import_pairs(path)
        assert (result.num_pairs, result.num_skipped) == (4, 1)
        pairs = store.preference_pairs()
        assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
            ("Capital of France?", "Paris.", "Lyon."),
            ("Really?", "Sorry: 4.", "Yes, 5."),
            ("Hi", "Hello!", "Go away."),
            ("Pick", "A", "B"),
        ]
        assert pairs[1].context == CHAT_SO_FAR
        tree = store.load_conversation(pairs[1].conversation_id)
        assert tree.conversation.source == "import" and tree.conversation.system_prompt == "Be helpful."
        assert [m.content for m in tree.shown_path] == ["2+2?", "5", "Really?", "Sorry: 4."]
        assert store.list_conversations() == []  # imported ones stay out of the chat's list
        assert len(store.list_conversations(include_imported=True)) == 4
        assert len({action for (action,) in store._conn.execute("SELECT DISTINCT action_id FROM messages")}) == 1


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"prompt": "a", "chosen": "b"', "not valid JSON"),
        ('["prompt", "chosen"]', "expected a JSON object"),
        ('{"prompt": "a", "chosen": "b"}', "missing 'rejected'"),
        ('{"chosen": "b", "rejected": "c"}', "missing 'prompt'"),
        ('{"prompt": 3, "chosen": "b", "rejected": "c"}', "'prompt' must be text"),
        ('{"chosen": [{"role": "user", "content": "q"}], "rejected": "c"}', "last message of 'chosen' must be the assistant"),
        ('{"chosen": [{"role": "user"}], "rejected": "c"}', "chosen\\[0\\] is not a"),
        ('{"chosen": [{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}], "rejected": "c"}', "role 'robot'"),
        ('{"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], '
         '"rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}]}', "disagree"),
        ('{"prompt": [{"role": "assistant", "content": "x"}], "chosen": "b", "rejected": "c"}', "alternate"),
    ],
)
def test_malformed_line_names_its_number_and_imports_nothing(tmp_path, bad_line, message):
    path = tmp_path / "pairs.jsonl"
    good = json.dumps({"prompt": "ok", "chosen": "yes", "rejected": "no"})
    path.write_text("\n".join([good, good, bad_line, good]) + "\n")
    with Store(tmp_path / "feedback.db") as store:
        with pytest.raises(ImportFormatError, match=f"pairs.jsonl: line 3: .*{message}"):
            store.import_pairs(path)
        for table in ("conversations", "messages", "rankings", "actions"):
            assert _count(store, table) == 0, table


def test_import_rejects_non_utf8(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "\xff"}\n')
    with Store(tmp_path / "feedback.db") as store:
        with pytest.raises(ImportFormatError, match="line 2: not UTF-8"):
            store.import_pairs(path)
        assert _count(store, "messages") == 0


def _populated(path) -> Store:
    store = Store(path)
    conversation = store.create_conversation(system_prompt="Be brief.")
    user = store.add_user_message(conversation.id, "Best pet?")
    a, b, c = store.add_assistant_replies(user.id, [ReplyDraft("A cat."), ReplyDraft("A rock."), ReplyDraft("Dogs.")])
    store.rank(user.id, [c.id, a.id, b.id])
    store.rate(b.id, -1, tags=["silly"], comment="rocks are not pets")
    store.save_demonstration(user.id, "Whatever suits your home.")
    return store


def test_export_pairs_sft_trees(tmp_path):
    store = _populated(tmp_path / "feedback.db")
    pairs = list(export_rows(store, "pairs"))
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [
        ("Dogs.", "A cat."), ("Dogs.", "A rock."), ("A cat.", "A rock."),
        ("Whatever suits your home.", "A cat."), ("Whatever suits your home.", "A rock."), ("Whatever suits your home.", "Dogs."),
    ]
    assert pairs[0]["prompt"] == "Best pet?"
    assert pairs[0]["context"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Best pet?"}]
    assert {p["group"] for p in pairs} == {pairs[0]["parent_id"]}

    sft = list(export_rows(store, "sft"))
    assert [(row["prompt"], row["completion"], row["source"]) for row in sft] == [
        ("Best pet?", "Whatever suits your home.", "human")
    ]

    (tree,) = list(export_rows(store, "trees"))
    assert tree["system_prompt"] == "Be brief." and len(tree["messages"]) == 5
    rated = [m for m in tree["messages"] if m["rating"]]
    assert rated[0]["content"] == "A rock." and rated[0]["rating"]["tags"] == ["silly"]
    id_of = {m["content"]: m["id"] for m in tree["messages"]}
    assert tree["rankings"][0]["ranked_ids"] == [id_of["Dogs."], id_of["A cat."], id_of["A rock."]]
    assert tree["shown_path"][-1] == tree["messages"][-1]["id"]

    # An export of pairs imports back into another store unchanged.
    exported = tmp_path / "pairs.jsonl"
    assert export_to_file(store, "pairs", exported) == 6
    with Store(tmp_path / "other.db") as other:
        other.import_pairs(exported)
        assert [(p.context, p.chosen, p.rejected) for p in other.preference_pairs()] == [
            (p["context"], p["chosen"], p["rejected"]) for p in pairs
        ]
    store.close()


def test_cli_commands_have_help():
    runner = CliRunner()
    for args in (["feedback"], ["feedback", "export"], ["feedback", "import"], ["feedback", "stats"]):
        result = runner.invoke(cli, [*args, "--help"])
        assert result.exit_code == 0, result.output
        help_text = result.output.split("Options:")[0]
        assert len(help_text.split("\n", 2)[-1].strip()) > 20, args


def test_cli_export_import_stats(tmp_path, chat_tui_home):
    _populated(database_path()).close()
    runner = CliRunner()
    out = tmp_path / "pairs.jsonl"
    result = runner.invoke(cli, ["feedback", "export", "--format", "pairs", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 6
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    result = runner.invoke(cli, ["feedback", "export", "--format", "trees"])
    assert result.exit_code == 0 and json.loads(result.output.splitlines()[0])["title"] == "Best pet?"

    result = runner.invoke(cli, ["feedback", "import", str(out)])
    assert result.exit_code == 0 and "Imported 6 preference pairs" in result.output

    result = runner.invoke(cli, ["feedback", "stats", "--json"])
    counts = json.loads(result.output)["counts"]
    assert counts["imported_conversations"] == 6 and counts["preference_pairs"] == 12

    result = runner.invoke(cli, ["feedback", "stats"])
    assert result.exit_code == 0 and "preference pairs" in result.output
    assert (chat_tui_home / "feedback.db").exists()
    assert (chat_tui_home / "feedback.db").stat().st_mode & 0o777 == 0o600


def test_cli_bad_import_is_one_line_and_exit_1(tmp_path, chat_tui_home, capsys, monkeypatch):
    import sys

    from chat_tui.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\nnot json\n')
    monkeypatch.setattr(sys, "argv", ["chat-tui", "feedback", "import", str(bad)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error:") and "line 2" in err and "\n" not in err
    with Store(database_path()) as store:
        assert _count(store, "messages") == 0
