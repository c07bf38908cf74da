"""Arena choices in the store (what each outcome writes, what it trains) and the
Bradley-Terry leaderboard checked against hand-worked numbers."""

from __future__ import annotations

import math

import pytest

from feedback import InvalidFeedbackError, Store
from feedback.leaderboard import ELO_CENTRE, ELO_PER_LOGIT, PRIOR_SD, Match, bradley_terry


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "feedback.db") as opened:
        yield opened


def _arena_turn(store, base_id, tuned_id, text="Name a colour."):
    conversation = store.create_conversation()
    user = store.add_user_message(conversation.id, text)
    first = store.add_assistant_reply(user.id, "Red.", base_id)
    second = store.add_assistant_reply(user.id, "Blue, the colour of the sky.", tuned_id)
    return user, first, second


@pytest.fixture
def versions(store):
    base = store.register_model_version("base", "/m/base")
    tuned = store.register_model_version("tuned", "/m/tuned", source="train", parent_id=base.id)
    return base.id, tuned.id


def test_a_win_is_a_ranking_that_trains_as_an_arena_pair(store, versions):
    user, first, second = _arena_turn(store, *versions)
    choice = store.record_arena_choice(first.id, second.id, "second", ["helpful"], "more detail")
    assert (choice.outcome, choice.tags, choice.comment) == ("second", ["helpful"], "more detail")
    assert (choice.first_version_id, choice.second_version_id) == versions
    pairs = store.preference_pairs()
    assert [(p.chosen_id, p.rejected_id, p.source) for p in pairs] == [(second.id, first.id, "arena")]
    assert store.load_conversation(user.conversation_id).rankings[user.id].ranked_ids == [second.id, first.id]
    assert store.stats().counts["arena_choices"] == 1


def test_both_bad_is_two_thumbs_down_with_the_reasons_and_no_pair(store, versions):
    user, first, second = _arena_turn(store, *versions)
    store.record_arena_choice(first.id, second.id, "both_bad", ["wrong"], "neither")
    assert store.preference_pairs() == []
    ratings = store.load_conversation(user.conversation_id).ratings
    assert {mid: (r.value, r.tags, r.comment) for mid, r in ratings.items()} == {
        first.id: (-1, ["wrong"], "neither"), second.id: (-1, ["wrong"], "neither")}
    assert sorted(j.message_id for j in store.training_data().judgments) == [first.id, second.id]


def test_a_later_tie_takes_back_the_earlier_win(store, versions):
    user, first, second = _arena_turn(store, *versions)
    store.record_arena_choice(first.id, second.id, "first")
    store.record_arena_choice(first.id, second.id, "tie")
    assert store.preference_pairs() == []
    assert [c.outcome for c in store.arena_choices()] == ["tie"]
    assert store.head_to_head(*versions) == (0, 0, 1)


@pytest.mark.parametrize("case, message", [
    ("same version", "do not come from two recorded model versions"),
    ("not siblings", "are not two replies to one user turn"),
    ("user message", "is not a model's reply"),
    ("bad outcome", "is not one of first, second, tie, both_bad"),
])
def test_bad_arena_choices_are_refused_and_write_nothing(store, versions, case, message):
    user, first, second = _arena_turn(store, *versions)
    other_user, other, _ = _arena_turn(store, *versions, text="Another.")
    same = store.add_assistant_reply(user.id, "Green.", versions[0])
    args = {"same version": (first.id, same.id, "first"), "not siblings": (first.id, other.id, "first"),
            "user message": (user.id, second.id, "first"), "bad outcome": (first.id, second.id, "left")}[case]
    before = store.snapshot().action_id
    with pytest.raises(InvalidFeedbackError, match=message):
        store.record_arena_choice(*args)
    assert store.snapshot().action_id == before and store.arena_choices() == []


def test_head_to_head_counts_from_either_side(store, versions):
    base, tuned = versions
    for outcome in ("second", "second", "first", "both_bad"):
        _, first, second = _arena_turn(store, base, tuned)
        store.record_arena_choice(first.id, second.id, outcome)
    _, first, second = _arena_turn(store, base, tuned)
    store.record_arena_choice(second.id, first.id, "first")  # tuned shown first this time, and won
    assert store.head_to_head(tuned, base) == (3, 1, 1)
    assert store.head_to_head(base, tuned) == (1, 3, 1)
    board = store.leaderboard()
    assert [s.player for s in board] == [tuned, base]
    assert (board[0].wins, board[0].losses, board[0].ties) == (3, 1, 1)


def _two_player_theta(wins: float, matches: int) -> float:
    """The MAP log-strength of the winner in a two-player symmetric problem, by bisection on
    wins - matches * sigmoid(2 theta) - theta / PRIOR_SD^2 = 0 (the other is at -theta)."""
    low, high = -10.0, 10.0
    for _ in range(200):
        mid = (low + high) / 2
        value = wins - matches / (1 + math.exp(-2 * mid)) - mid / PRIOR_SD**2
        low, high = (mid, high) if value > 0 else (low, mid)
    return (low + high) / 2


def test_bradley_terry_matches_the_hand_worked_two_player_fit():
    # One win: 1 - sigmoid(2t) - t = 0 gives t = 0.3374 (checked by hand: sigmoid(0.675) = 0.6626).
    theta = _two_player_theta(1, 1)
    assert theta == pytest.approx(0.3374, abs=1e-3)
    board = bradley_terry([Match("new", "old", 1.0)])
    assert [s.player for s in board] == ["new", "old"]
    assert board[0].rating == pytest.approx(ELO_CENTRE + ELO_PER_LOGIT * theta, abs=1e-6)
    assert board[1].rating == pytest.approx(ELO_CENTRE - ELO_PER_LOGIT * theta, abs=1e-6)
    # Laplace interval: the information of theta_new after eliminating theta_old.
    w = 1 / (1 + math.exp(-2 * theta)) * (1 - 1 / (1 + math.exp(-2 * theta)))
    a = 1 / PRIOR_SD**2 + w
    variance = a / (a * a - w * w)
    half = 1.959964 * math.sqrt(variance) * ELO_PER_LOGIT
    assert board[0].high - board[0].rating == pytest.approx(half, abs=1e-6)


def test_ties_split_the_point_and_more_matches_narrow_the_interval():
    even = bradley_terry([Match("a", "b", 0.5)] * 4)
    assert even[0].rating == pytest.approx(ELO_CENTRE) and even[1].rating == pytest.approx(ELO_CENTRE)
    few = bradley_terry([Match("a", "b", 1.0), Match("a", "b", 0.0)] * 2)
    many = bradley_terry([Match("a", "b", 1.0), Match("a", "b", 0.0)] * 20)
    assert few[0].high - few[0].low > many[0].high - many[0].low
    three = bradley_terry([Match("a", "b", 1.0)] * 3)
    assert three[0].rating - ELO_CENTRE == pytest.approx(ELO_PER_LOGIT * _two_player_theta(3, 3), abs=1e-6)


def test_a_player_with_no_match_sits_at_the_prior():
    board = bradley_terry([Match("a", "b", 1.0)], players=["c"])
    c = next(s for s in board if s.player == "c")
    assert c.rating == pytest.approx(ELO_CENTRE) and c.num_matches == 0
    assert c.high - c.rating == pytest.approx(1.959964 * PRIOR_SD * ELO_PER_LOGIT)
