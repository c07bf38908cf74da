"""The trainer's views: preference pairs, demonstrations and prompts, with their context,
as of a snapshot."""

from __future__ import annotations

import pytest

from feedback import ReplyDraft, Store


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "feedback.db") as opened:
        yield opened


def _two_turns(store: Store):
    """system + user1 -> (a1 shown, a1b) ; user2 under a1 -> four replies."""
    conversation = store.create_conversation(system_prompt="You are terse.")
    user1 = store.add_user_message(conversation.id, "Hi")
    a1, a1b = store.add_assistant_replies(user1.id, [ReplyDraft("Hello."), ReplyDraft("Hey.")], show_index=0)
    user2 = store.add_user_message(conversation.id, "List three colours.")
    replies = store.add_assistant_replies(user2.id, [ReplyDraft(f"colours {i}") for i in range(4)])
    return conversation, user1, a1, a1b, user2, replies


def _pair_ids(pairs):
    return [(p.chosen_id, p.rejected_id) for p in pairs]


def test_four_way_ranking_gives_six_ordered_pairs_with_context(store):
    conversation, user1, a1, _, user2, replies = _two_turns(store)
    r = [m.id for m in replies]
    store.rank(user2.id, [r[2], r[0], r[3], r[1]])
    pairs = store.preference_pairs()
    assert _pair_ids(pairs) == [
        (r[2], r[0]), (r[2], r[3]), (r[2], r[1]),
        (r[0], r[3]), (r[0], r[1]),
        (r[3], r[1]),
    ]
    expected_context = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "List three colours."},
    ]
    for pair in pairs:
        assert pair.context == expected_context
        assert pair.prompt == "List three colours."
        assert pair.chosen == store.get_message(pair.chosen_id).content
        assert pair.rejected == store.get_message(pair.rejected_id).content
        assert (pair.group_key, pair.parent_id, pair.conversation_id, pair.source) == (
            user2.id, user2.id, conversation.id, "ranking")
    groups = store.preference_groups()
    assert len(groups) == 1 and groups[0].group_key == user2.id and len(groups[0].pairs) == 6


def test_context_follows_the_branch_not_the_shown_path(store):
    conversation, user1, a1, a1b, _, _ = _two_turns(store)
    # A second branch: user turn under the other first reply.
    store.switch_path(a1b.id)
    user2b = store.add_user_message(conversation.id, "Bye")
    x, y = store.add_assistant_replies(user2b.id, [ReplyDraft("Bye!"), ReplyDraft("Later.")])
    store.rank(user2b.id, [y.id, x.id])
    store.switch_path(a1.id)  # the shown path no longer goes through this branch
    (pair,) = store.preference_pairs()
    assert [m["content"] for m in pair.context] == ["You are terse.", "Hi", "Hey.", "Bye"]


def test_thumbs_on_siblings_give_up_versus_down_pairs(store):
    _, _, _, _, user2, replies = _two_turns(store)
    up, down1, down2, unrated = (m.id for m in replies)
    store.rate(up, 1)
    store.rate(down1, -1, tags=["wrong"])
    store.rate(down2, -1)
    pairs = store.preference_pairs()
    assert _pair_ids(pairs) == [(up, down1), (up, down2)]
    assert {p.source for p in pairs} == {"thumbs"}


def test_single_thumb_gives_no_pair(store):
    _, _, _, _, _, replies = _two_turns(store)
    store.rate(replies[0].id, 1)
    store.rate(replies[1].id, 1)
    assert store.preference_pairs() == []


def test_demonstration_is_preferred_over_model_siblings_not_voted_up(store):
    """DITTO pairs: the reply the user wrote beats the model's own samples, except one the
    user voted up (nothing says the written reply is better than that)."""
    _, _, _, _, user2, replies = _two_turns(store)
    up, down, unrated, other = (m.id for m in replies)
    store.rate(up, 1)
    store.rate(down, -1)
    human = store.save_demonstration(user2.id, "Red, green, blue.")
    pairs = store.preference_pairs()
    assert _pair_ids(pairs) == [(up, down), (human.id, down), (human.id, unrated), (human.id, other)]
    assert [p.source for p in pairs] == ["thumbs", "demonstration", "demonstration", "demonstration"]
    assert pairs[1].chosen == "Red, green, blue."
    # Each pair carries the newest action behind it.
    assert pairs[0].action_id == max(r.action_id for r in store.load_conversation(pairs[0].conversation_id).ratings.values())
    assert pairs[2].action_id == human.action_id


def test_lone_thumbs_are_judgments_and_paired_thumbs_are_not(store):
    _, user1, a1, _, _, replies = _two_turns(store)
    lone_up = store.rate(a1.id, 1)
    store.rate(replies[0].id, 1)
    store.rate(replies[1].id, -1)  # these two form a pair
    lone_down = store.rate(replies[2].id, -1)  # a second down-vote pairs with the up-vote too
    data = store.training_data()
    assert [(j.message_id, j.label) for j in data.judgments] == [(a1.id, 1)]
    assert data.judgments[0].action_id == lone_up.action_id
    assert data.judgments[0].context[-1]["content"] == user1.content
    assert lone_down.action_id > lone_up.action_id


def test_ranking_wins_over_thumbs_that_disagree(store):
    _, _, _, _, user2, replies = _two_turns(store)
    a, b = replies[0].id, replies[1].id
    store.rank(user2.id, [b, a])
    store.rate(a, 1)
    store.rate(b, -1)
    assert [(p.chosen_id, p.rejected_id, p.source) for p in store.preference_pairs()] == [(b, a, "ranking")]


def test_not_rankable_gives_no_ranking_pairs(store):
    _, _, _, _, user2, replies = _two_turns(store)
    store.rank(user2.id, [m.id for m in replies])
    store.mark_not_rankable(user2.id)
    assert store.preference_pairs() == []
    store.rate(replies[0].id, 1)
    store.rate(replies[1].id, -1)
    assert _pair_ids(store.preference_pairs()) == [(replies[0].id, replies[1].id)]


def test_demonstrations_and_prompts_carry_their_context(store):
    conversation, user1, a1, a1b, user2, replies = _two_turns(store)
    store.rate(a1b.id, 1)
    human = store.save_demonstration(user2.id, "Red, green, blue.")
    store.rate(replies[3].id, -1)
    demos = store.demonstrations()
    assert [(d.message_id, d.source) for d in demos] == [(a1b.id, "upvoted"), (human.id, "human")]
    assert demos[0].context == [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]
    assert demos[0].completion == "Hey." and demos[0].prompt == "Hi"
    assert [m["content"] for m in demos[1].context] == ["You are terse.", "Hi", "Hello.", "List three colours."]
    assert demos[1].parent_id == user2.id and demos[1].conversation_id == conversation.id

    prompts = store.prompts()
    assert [p.message_id for p in prompts] == [user1.id, user2.id]
    assert prompts[0].context == [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]
    assert [m["role"] for m in prompts[1].context] == ["system", "user", "assistant", "user"]
    assert prompts[1].context[-1]["content"] == "List three colours."


def test_no_system_prompt_means_no_system_message(store):
    conversation = store.create_conversation()
    user = store.add_user_message(conversation.id, "Hi")
    assert store.prompts()[0].context == [{"role": "user", "content": "Hi"}]
    assert store.prompts()[0].message_id == user.id


def test_views_as_of_a_snapshot_stay_fixed(store):
    _, _, _, _, user2, replies = _two_turns(store)
    r = [m.id for m in replies]
    store.rank(user2.id, [r[0], r[1]])
    store.rate(r[2], 1)
    store.rate(r[3], -1)
    run = store.start_training_run("dpo")
    before = store.training_data(run.snapshot_action_id)
    assert _pair_ids(before.pairs) == [(r[0], r[1]), (r[2], r[3])]

    # The chat goes on: a re-ranking, a changed thumb, a demonstration, a new turn.
    store.rank(user2.id, [r[1], r[0]])
    store.rate(r[2], -1)
    store.save_demonstration(user2.id, "Cyan.")
    conversation_id = replies[0].conversation_id
    store.add_user_message(conversation_id, "More?")

    after_at_snapshot = store.training_data(run.snapshot_action_id)
    assert after_at_snapshot.pairs == before.pairs
    assert after_at_snapshot.demonstrations == before.demonstrations
    assert after_at_snapshot.prompts == before.prompts
    assert store.preference_pairs(run.snapshot_action_id) == before.pairs
    now = store.training_data()
    assert now.snapshot.action_id > run.snapshot_action_id
    assert _pair_ids(now.pairs) != _pair_ids(before.pairs)
    assert len(now.prompts) == len(before.prompts) + 1


def test_counts_since_the_last_training_run(store):
    _, _, _, _, user2, replies = _two_turns(store)
    store.rank(user2.id, [replies[0].id, replies[1].id])
    counts = store.counts_since_last_training()
    assert (counts.since_action_id, counts.num_user_messages, counts.num_replies, counts.num_rankings) == (0, 2, 6, 1)
    assert counts.num_new_pairs == 1

    run = store.start_training_run("reward")
    store.finish_training_run(run.id, "succeeded")
    store.rate(replies[2].id, 1)
    store.rate(replies[3].id, -1)
    store.save_demonstration(user2.id, "Cyan.")
    counts = store.counts_since_last_training()
    assert counts.since_action_id == run.snapshot_action_id
    assert (counts.num_user_messages, counts.num_replies, counts.num_demonstrations) == (0, 0, 1)
    assert (counts.num_ratings, counts.num_rankings) == (2, 0)
    store.rate(replies[3].id, -1, ["wrong"], "reasons added later")  # the same rating, with reasons
    store.rank(user2.id, [replies[2].id, replies[3].id])
    store.rank(user2.id, [replies[3].id, replies[2].id])  # ranked again: one ranking
    counts = store.counts_since_last_training()
    assert (counts.num_ratings, counts.num_rankings) == (2, 1)
    store.rank(user2.id, [replies[2].id, replies[3].id])
    # thumbs (r2 over r3) and demonstration (Cyan over r0, r1 and r3: every model reply not voted up)
    assert counts.num_new_pairs == 4


def test_stats_counts_per_kind_and_model_version(store):
    base = store.register_model_version("base", "/m/base", activate=True)
    tuned = store.register_model_version("tuned", "/m/tuned", source="train", parent_id=base.id)
    conversation = store.create_conversation()
    user = store.add_user_message(conversation.id, "Hi")
    a = store.add_assistant_reply(user.id, "Hello", model_version_id=base.id)
    b = store.add_assistant_reply(user.id, "Yo", model_version_id=tuned.id)
    c = store.add_assistant_reply(user.id, "Greetings", model_version_id=tuned.id)
    store.rate(a.id, -1)
    store.rate(b.id, 1)
    store.rate(c.id, 1)
    store.save_demonstration(user.id, "Hello there!")
    stats = store.stats()
    assert stats.counts["conversations"] == 1
    assert stats.counts["model_replies"] == 3 and stats.counts["human_replies"] == 1
    assert (stats.counts["ratings_up"], stats.counts["ratings_down"]) == (2, 1)
    assert stats.counts["preference_pairs"] == 3  # b>a, c>a, human>a
    assert stats.counts["demonstrations"] == 3 and stats.counts["prompts"] == 1
    per_version = {v.name: (v.is_active, v.num_replies, v.num_up, v.num_down) for v in stats.per_version}
    assert per_version == {"base": (True, 1, 0, 1), "tuned": (False, 2, 2, 0)}


def test_a_reply_keeps_the_system_prompt_it_was_written_under(store):
    conversation = store.create_conversation()
    user1 = store.add_user_message(conversation.id, "Write a haiku.")
    old_good, old_bad = store.add_assistant_replies(user1.id, [ReplyDraft("Old pond."), ReplyDraft("No.")])
    store.rate(old_good.id, 1)
    store.rate(old_bad.id, -1)
    store.set_system_prompt(conversation.id, "Answer in French.")
    # Written after the change: under the system prompt.
    new_good, new_bad = store.add_assistant_replies(user1.id, [ReplyDraft("Vieil étang."), ReplyDraft("Non.")])
    store.rank(user1.id, [new_good.id, new_bad.id, old_good.id])
    user2 = store.add_user_message(conversation.id, "Another.")
    later = store.add_assistant_reply(user2.id, "Grenouille.")
    store.rate(later.id, 1)

    pairs = store.preference_pairs()
    # The ranked replies written under the prompt pair with each other, with it in their
    # context; the old reply it ranks below them was written without it: no pair with it.
    assert {(p.chosen_id, p.rejected_id) for p in pairs} == {(new_good.id, new_bad.id)}
    assert pairs[0].context[0] == {"role": "system", "content": "Answer in French."}
    demos = {d.message_id: d.context for d in store.demonstrations()}
    assert demos[old_good.id] == [{"role": "user", "content": "Write a haiku."}]
    assert demos[later.id][0] == {"role": "system", "content": "Answer in French."}
    # Rolling out on the first prompt now happens under the prompt as it is now.
    prompts = {p.message_id: p.context for p in store.prompts()}
    assert prompts[user1.id][0]["content"] == "Answer in French."


def test_a_cleared_system_prompt_leaves_later_replies_without_one(store):
    conversation = store.create_conversation(system_prompt="Be terse.")
    user = store.add_user_message(conversation.id, "Hi")
    before = store.add_assistant_reply(user.id, "Hi.")
    store.set_system_prompt(conversation.id, None)
    after = store.add_assistant_reply(user.id, "Hello there, how can I help?")
    store.rate(before.id, 1)
    store.rate(after.id, 1)
    demos = {d.message_id: d.context for d in store.demonstrations()}
    assert demos[before.id][0] == {"role": "system", "content": "Be terse."}
    assert demos[after.id] == [{"role": "user", "content": "Hi"}]
