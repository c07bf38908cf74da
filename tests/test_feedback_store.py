"""The Store's conversation, judgment, model-version, training-run and settings calls,
and the errors it gives for bad input."""

from __future__ import annotations

import pytest

from feedback import FeedbackError, InvalidFeedbackError, NotFoundError, ReplyDraft, Store


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "feedback.db") as opened:
        yield opened


def _chat(store: Store, num_replies: int = 2):
    conversation = store.create_conversation()
    user = store.add_user_message(conversation.id, "What is the capital of France?")
    replies = store.add_assistant_replies(
        user.id, [ReplyDraft(f"Paris, take {i}.", None, {"temperature": 0.8}, "stop") for i in range(num_replies)]
    )
    return conversation, user, replies


def test_conversation_tree_and_shown_path(store):
    version = store.register_model_version("base", "/models/base", activate=True)
    conversation = store.create_conversation(system_prompt="Answer briefly.")
    user = store.add_user_message(conversation.id, "Name a prime number.\nAny one.")
    first = store.add_assistant_reply(user.id, "7", version.id, {"temperature": 0.7, "top_p": 0.9}, "stop")
    second = store.add_assistant_reply(user.id, "9", version.id, {"temperature": 1.0}, "length")
    follow_up = store.add_user_message(conversation.id, "Another?")
    assert follow_up.parent_id == second.id  # continues the shown path

    tree = store.load_conversation(conversation.id)
    assert tree.conversation.title == "Name a prime number."  # from the first user line
    assert tree.conversation.system_prompt == "Answer briefly."
    assert [m.id for m in tree.shown_path] == [user.id, second.id, follow_up.id]
    assert [m.id for m in tree.siblings(first.id)] == [first.id, second.id]
    assert tree.messages[first.id].sampling == {"temperature": 0.7, "top_p": 0.9}
    assert tree.messages[second.id].finish_reason == "length"
    assert tree.messages[first.id].model_version_id == version.id
    assert not tree.messages[first.id].is_human and tree.messages[user.id].is_human

    # Switching to the first reply shows its branch (it has no children).
    path = store.switch_path(first.id)
    assert [m.id for m in path] == [user.id, first.id]
    # Switching back to the second reply goes down to its newest leaf.
    assert [m.id for m in store.switch_path(second.id)] == [user.id, second.id, follow_up.id]
    assert [m.id for m in store.shown_path(conversation.id)] == [user.id, second.id, follow_up.id]

    # Editing the first user turn is a root sibling.
    edit = store.add_sibling(user.id, "Name an even prime.")
    assert edit.parent_id is None and edit.role == "user" and edit.is_human
    assert [m.id for m in store.shown_path(conversation.id)] == [edit.id]


def test_demonstration_is_a_human_sibling(store):
    _, user, replies = _chat(store)
    demo = store.save_demonstration(user.id, "Paris.")
    assert demo.parent_id == user.id and demo.role == "assistant" and demo.is_human
    assert demo.model_version_id is None
    tree = store.load_conversation(demo.conversation_id)
    assert tree.shown_path[-1].id == demo.id
    assert {m.id for m in tree.children(user.id)} == {replies[0].id, replies[1].id, demo.id}


def test_list_rename_system_prompt_delete(store):
    first = store.create_conversation("first")
    second = store.create_conversation("second")
    assert [c.id for c in store.list_conversations()] == [second.id, first.id]
    store.add_user_message(first.id, "hello")  # activity moves it to the top
    assert [c.id for c in store.list_conversations()] == [first.id, second.id]
    assert [c.id for c in store.list_conversations(limit=1, offset=1)] == [second.id]
    assert store.rename_conversation(second.id, "renamed").title == "renamed"
    assert store.set_system_prompt(second.id, "Be kind.").system_prompt == "Be kind."
    assert store.set_system_prompt(second.id, None).system_prompt is None
    store.delete_conversation(first.id)
    assert [c.id for c in store.list_conversations()] == [second.id]
    assert store._conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    with pytest.raises(NotFoundError, match=f"conversation {first.id}"):
        store.load_conversation(first.id)


def test_delete_removes_messages_ratings_rankings(store):
    conversation, user, replies = _chat(store)
    store.rate(replies[0].id, 1)
    store.rank(user.id, [replies[1].id, replies[0].id])
    store.delete_conversation(conversation.id)
    for table in ("messages", "ratings", "rankings", "ranking_items", "conversations"):
        assert store._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    assert store.preference_pairs() == []
    assert store.search_conversations("Paris") == []


def test_search_is_full_text_and_literal(store):
    cooking = store.create_conversation("Cooking")
    user = store.add_user_message(cooking.id, "How long do I boil an egg?")
    store.add_assistant_reply(user.id, "About nine minutes for a hard-boiled egg.")
    other = store.create_conversation()
    store.add_user_message(other.id, "Tell me about rivers")
    hits = store.search_conversations("minutes egg")
    assert [h.conversation.id for h in hits] == [cooking.id]
    assert "[" in hits[0].snippet  # the match is marked
    assert [h.conversation.id for h in store.search_conversations("cooking")] == [cooking.id]  # title
    assert [h.conversation.id for h in store.search_conversations("rivers")] == [other.id]
    # FTS syntax in user input is matched literally, not parsed.
    assert store.search_conversations('egg" OR "rivers') == []
    assert store.search_conversations("NOT") == []
    assert store.search_conversations("   ") == []
    # Each word also matches as the start of a word, so a search finds as you type.
    assert [h.conversation.id for h in store.search_conversations("riv")] == [other.id]
    assert [h.conversation.id for h in store.search_conversations("hard-boi egg")] == [cooking.id]
    assert store.search_conversations("ivers") == []  # the start of a word, not any part


def test_ratings_replace_and_clear(store):
    conversation, user, replies = _chat(store)
    rating = store.rate(replies[0].id, 1, tags=["accurate", " concise "], comment="good")
    assert (rating.value, rating.tags, rating.comment) == (1, ["accurate", "concise"], "good")
    store.rate(replies[0].id, -1, tags=["wrong"])
    assert store.load_conversation(conversation.id).ratings[replies[0].id].value == -1
    store.clear_rating(replies[0].id)
    assert replies[0].id not in store.load_conversation(conversation.id).ratings


def test_ranking_replace_and_not_rankable(store):
    conversation, user, replies = _chat(store, 3)
    ids = [r.id for r in replies]
    ranking = store.rank(user.id, [ids[2], ids[0], ids[1]], comment="third was clearest")
    assert ranking.ranked_ids == [ids[2], ids[0], ids[1]] and ranking.is_rankable
    store.rank(user.id, ids)
    assert store.load_conversation(conversation.id).rankings[user.id].ranked_ids == ids
    not_rankable = store.mark_not_rankable(user.id, "all wrong")
    assert not not_rankable.is_rankable and not_rankable.ranked_ids == []


@pytest.mark.parametrize("value", [0, 2, -2, True, 1.0, "1", None])
def test_rating_value_must_be_plus_or_minus_one(store, value):
    _, _, replies = _chat(store)
    with pytest.raises(InvalidFeedbackError, match=f"rating value {value!r} is not"):
        store.rate(replies[0].id, value)
    assert store._conn.execute("SELECT count(*) FROM ratings").fetchone()[0] == 0


def test_rating_a_missing_message(store):
    with pytest.raises(NotFoundError, match="message 4242 does not exist"):
        store.rate(4242, 1)
    assert store._conn.execute("SELECT count(*) FROM ratings").fetchone()[0] == 0
    assert store._conn.execute("SELECT count(*) FROM actions").fetchone()[0] == 0  # rolled back


def test_rating_bad_tags_and_user_messages(store):
    _, user, replies = _chat(store)
    with pytest.raises(InvalidFeedbackError, match="string 'wrong'"):
        store.rate(replies[0].id, -1, tags="wrong")
    with pytest.raises(InvalidFeedbackError, match="rating tag 3"):
        store.rate(replies[0].id, -1, tags=[3])
    with pytest.raises(InvalidFeedbackError, match=f"message {user.id} is a user message"):
        store.rate(user.id, 1)


def test_ranking_must_name_siblings(store):
    _, user, replies = _chat(store, 2)
    _, other_user, other_replies = _chat(store, 2)
    actions_before = store._conn.execute("SELECT count(*) FROM actions").fetchone()[0]
    with pytest.raises(InvalidFeedbackError, match=f"message {other_replies[0].id} is not a reply to message {user.id}"):
        store.rank(user.id, [replies[0].id, other_replies[0].id])
    with pytest.raises(InvalidFeedbackError, match=f"message {user.id} is not a reply"):
        store.rank(user.id, [replies[0].id, user.id])
    with pytest.raises(InvalidFeedbackError, match="appears twice"):
        store.rank(user.id, [replies[0].id, replies[0].id])
    with pytest.raises(InvalidFeedbackError, match="at least two"):
        store.rank(user.id, [replies[0].id])
    with pytest.raises(NotFoundError, match="message 999 does not exist"):
        store.rank(user.id, [replies[0].id, 999])
    with pytest.raises(InvalidFeedbackError, match="is an assistant message"):
        store.rank(replies[0].id, [replies[1].id, replies[0].id])
    assert store._conn.execute("SELECT count(*) FROM rankings").fetchone()[0] == 0
    assert store._conn.execute("SELECT count(*) FROM actions").fetchone()[0] == actions_before


def test_tree_rules(store):
    conversation, user, replies = _chat(store)
    other = store.create_conversation()
    with pytest.raises(InvalidFeedbackError, match="a user message must follow an assistant message"):
        store.add_user_message(conversation.id, "again", parent_id=user.id)
    with pytest.raises(InvalidFeedbackError, match="belongs to conversation"):
        store.add_user_message(other.id, "cross", parent_id=replies[0].id)
    with pytest.raises(InvalidFeedbackError, match="an assistant message must follow a user message"):
        store.add_assistant_reply(replies[0].id, "reply to a reply")
    with pytest.raises(InvalidFeedbackError, match="cannot be empty"):
        store.add_user_message(conversation.id, "  ")
    with pytest.raises(InvalidFeedbackError, match="cannot be empty"):
        store.save_demonstration(user.id, "")
    with pytest.raises(NotFoundError, match="model version 77"):
        store.add_assistant_reply(user.id, "x", model_version_id=77)
    with pytest.raises(NotFoundError, match="conversation 555"):
        store.add_user_message(555, "hello")
    with pytest.raises(InvalidFeedbackError, match="show_index 3"):
        store.add_assistant_replies(user.id, [ReplyDraft("a")], show_index=3)


def test_model_versions(store):
    base = store.register_model_version("base", "/models/base", source="import", metrics={"params": 135})
    assert store.active_model_version() is None
    tuned = store.register_model_version("ppo-1", "/models/ppo-1", source="train", parent_id=base.id, activate=True)
    assert store.active_model_version().id == tuned.id
    assert store.activate_model_version("base").is_active
    assert [v.is_active for v in store.list_model_versions()] == [True, False]
    assert store.get_model_version(tuned.id).parent_id == base.id
    assert store.set_model_version_metrics("ppo-1", {"reward": 0.5}).metrics == {"reward": 0.5}
    with pytest.raises(NotFoundError, match="'nope' is not a known model version"):
        store.activate_model_version("nope")
    with pytest.raises(InvalidFeedbackError, match="'base' is already taken"):
        store.register_model_version("base", "/elsewhere")
    with pytest.raises(InvalidFeedbackError, match="source 'download'"):
        store.register_model_version("x", "/x", source="download")


def test_training_runs_record_snapshot_and_result(store):
    _, user, replies = _chat(store)
    store.rank(user.id, [r.id for r in replies])
    base = store.register_model_version("base", "/m/base", activate=True)
    snapshot = store.snapshot()
    run = store.start_training_run("dpo", {"beta": 0.1}, base_version_id=base.id)
    assert run.status == "running" and run.snapshot_action_id == snapshot.action_id and run.config == {"beta": 0.1}
    store.update_training_run(run.id, {"step": 10, "loss": 0.6})
    result = store.register_model_version("dpo-1", "/m/dpo-1", source="train", parent_id=base.id)
    done = store.finish_training_run(run.id, "succeeded", result_version_id=result.id, metrics={"loss": 0.4})
    assert done.metrics == {"step": 10, "loss": 0.4} and done.finished_at and done.result_version_id == result.id
    assert store.last_training_run().id == run.id
    with pytest.raises(InvalidFeedbackError, match="already finished"):
        store.finish_training_run(run.id, "failed")
    with pytest.raises(InvalidFeedbackError, match="status 'done'"):
        store.finish_training_run(run.id, "done")
    with pytest.raises(NotFoundError, match="training run 99"):
        store.update_training_run(99, {})
    failed = store.start_training_run("ppo")
    store.finish_training_run(failed.id, "failed", error="out of memory")
    assert store.last_training_run().id == run.id
    assert store.last_training_run(status="failed").error == "out of memory"


def test_settings(store):
    assert store.get_setting("sampling", {"temperature": 0.7}) == {"temperature": 0.7}
    store.set_setting("sampling", {"temperature": 0.3, "top_p": 0.9})
    store.set_setting("sampling", {"temperature": 0.5})
    assert store.get_setting("sampling") == {"temperature": 0.5}
    with pytest.raises(InvalidFeedbackError, match="setting 'bad'"):
        store.set_setting("bad", object())
    store.delete_setting("sampling")
    assert store.get_setting("sampling") is None


def test_every_user_action_is_one_logged_transaction(store):
    conversation, user, replies = _chat(store, 3)
    store.rate(replies[0].id, 1)
    kinds = [row[0] for row in store._conn.execute("SELECT kind FROM actions ORDER BY id")]
    assert kinds == ["create_conversation", "add_user_message", "add_assistant_replies", "rate"]
    # The three alternatives came from one action.
    assert len({r.action_id for r in replies}) == 1


def test_errors_are_feedback_errors():
    for error in (NotFoundError, InvalidFeedbackError):
        assert issubclass(error, FeedbackError)


def test_one_store_shared_by_threads(store):
    import threading

    errors: list[BaseException] = []

    def chat(n: int) -> None:
        try:
            conversation = store.create_conversation(f"thread {n}")
            for turn in range(15):
                user = store.add_user_message(conversation.id, f"turn {turn}")
                reply = store.add_assistant_reply(user.id, f"reply {turn}")
                store.rate(reply.id, 1 if turn % 2 else -1)
                store.load_conversation(conversation.id)
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=chat, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for conversation in store.list_conversations():
        path = store.shown_path(conversation.id)
        assert len(path) == 30 and [m.role for m in path[:2]] == ["user", "assistant"]
    assert store.stats().counts["ratings_up"] == 4 * 7
