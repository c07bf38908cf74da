"""Blind arena choices between two model versions, and the leaderboard they make.

In the arena one user turn gets two replies, one from each of two versions, shown side by
side without names. The user's choice is stored three ways at once, in one action:

- the `arena_choices` row: the two replies, the outcome ("first", "second", "tie" or
  "both_bad"), reason tags and a comment;
- a win is also a ranking of the two sibling replies, winner first, so it becomes a
  preference pair like any ranking (its source reads "arena");
- "both bad" is also a thumbs-down with the reasons on each reply (two lone negatives);
  a tie adds no judgment (and replaces an earlier ranking of the turn with "not rankable").

Each reply carries the version that wrote it (messages.model_version_id), which is how the
leaderboard (`leaderboard()`, feedback/leaderboard.py) knows who played. A later choice
on the same user turn replaces the earlier one, as rankings do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from feedback.database import utc_now
from feedback.errors import InvalidFeedbackError
from feedback.judgments import JudgmentsMixin, check_tags
from feedback.leaderboard import Match, Strength, bradley_terry
from feedback.queries import current_arena_choices, current_rankings
from feedback.records import ArenaChoice

ARENA_OUTCOMES = ("first", "second", "tie", "both_bad")
SCORES = {"first": 1.0, "second": 0.0, "tie": 0.5, "both_bad": 0.5}


class ArenaMixin(JudgmentsMixin):
    """Arena operations of the Store."""

    def record_arena_choice(
        self, first_id: int, second_id: int, outcome: str, tags: Sequence[str] = (), comment: str | None = None
    ) -> ArenaChoice:
        """Store the user's verdict on two sibling replies from two versions (see the module
        docstring for what each outcome writes)."""
        if outcome not in ARENA_OUTCOMES:
            raise InvalidFeedbackError(f"arena outcome {outcome!r} is not one of {', '.join(ARENA_OUTCOMES)}")
        clean_tags = check_tags(tags)
        now = utc_now()
        with self._writing() as conn:
            first, second = self._message(conn, first_id), self._message(conn, second_id)
            for message in (first, second):
                if message.role != "assistant" or message.is_human:
                    raise InvalidFeedbackError(f"message {message.id} is not a model's reply; the arena compares replies")
            if first.id == second.id or first.parent_id != second.parent_id:
                raise InvalidFeedbackError(f"messages {first.id} and {second.id} are not two replies to one user turn")
            if first.model_version_id is None or first.model_version_id == second.model_version_id:
                raise InvalidFeedbackError(
                    f"messages {first.id} and {second.id} do not come from two recorded model versions")
            parent = self._message(conn, first.parent_id)
            action_id = self._log_action(conn, "arena_choice", parent.conversation_id, now)
            conn.execute(
                """INSERT INTO arena_choices (parent_id, first_id, second_id, outcome, tags, comment, action_id, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                [parent.id, first.id, second.id, outcome, json.dumps(clean_tags), comment, action_id, now],
            )
            if outcome in ("first", "second"):
                best_first = [first.id, second.id] if outcome == "first" else [second.id, first.id]
                self._insert_ranking(conn, parent, best_first, True, comment, now, action_id)
            elif parent.id in current_rankings(conn, parent.conversation_id):
                self._insert_ranking(conn, parent, [], False, comment, now, action_id)
            if outcome == "both_bad":
                for message in (first, second):
                    self._insert_rating(conn, message.id, -1, clean_tags, comment, action_id, now)
            self._touch(conn, parent.conversation_id, now)
            return next(c for c in current_arena_choices(conn) if c.parent_id == parent.id)

    def arena_choices(self) -> list[ArenaChoice]:
        """Every user turn's current arena choice, oldest first."""
        with self._reading() as conn:
            return current_arena_choices(conn)

    def leaderboard(self) -> list[Strength]:
        """Each version's Bradley-Terry strength over all current arena choices, strongest
        first; `Strength.player` is the version id. Versions in no match are left out."""
        return bradley_terry([Match(c.first_version_id, c.second_version_id, SCORES[c.outcome])
                              for c in self.arena_choices() if c.second_version_id is not None])

    def head_to_head(self, version_a: int, version_b: int) -> tuple[int, int, int]:
        """(wins of a, wins of b, ties and both bad) over the arena choices between them."""
        wins_a = wins_b = ties = 0
        for choice in self.arena_choices():
            versions = (choice.first_version_id, choice.second_version_id)
            if set(versions) != {version_a, version_b}:
                continue
            score = SCORES[choice.outcome] if versions[0] == version_a else 1 - SCORES[choice.outcome]
            if score == 0.5:
                ties += 1
            elif score > 0.5:
                wins_a += 1
            else:
                wins_b += 1
        return wins_a, wins_b, ties
