"""The `Store`: one object for everything the UI and the trainer do with the feedback.

Its operations are grouped by subject in their own modules (conversations, judgments,
versions, importing); this module adds the snapshot and the trainer's views on top. See the
package docstring (`feedback/__init__.py`) for the table of calls.
"""

from __future__ import annotations

import sqlite3

from feedback.arena import ArenaMixin
from feedback.database import utc_now
from feedback.queries import current_ratings
from feedback.importing import ImportMixin
from feedback.records import (
    Demonstration,
    FeedbackCounts,
    PreferenceGroup,
    PreferencePair,
    Prompt,
    Snapshot,
    TrainingData,
    group_pairs,
)
from feedback.stats import FeedbackStats, collect_stats
from feedback.versions import VersionsMixin
from feedback.views import SnapshotReader

SnapshotLike = Snapshot | int | None


class Store(ImportMixin, ArenaMixin, VersionsMixin):
    """The feedback database at `path`, opened (and migrated) on construction.

    Each method is one transaction. Safe to share between threads of one process; each
    process opens its own Store on the same file.
    """

    # ---- snapshots and the trainer's views -----------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The store's state now, to read the views at later."""
        with self._reading() as conn:
            return Snapshot(_last_action_id(conn), utc_now())

    def training_data(self, snapshot: SnapshotLike = None) -> TrainingData:
        """Pairs, demonstrations, prompts and lone thumbs, read in one transaction at one snapshot."""
        with self._reading() as conn:
            taken = self._resolve(conn, snapshot)
            reader = SnapshotReader(conn, taken.action_id)
            pairs = reader.preference_pairs()
            return TrainingData(taken, pairs, reader.demonstrations(), reader.prompts(), reader.judgments(pairs))

    def preference_pairs(self, snapshot: SnapshotLike = None) -> list[PreferencePair]:
        """Every (chosen, rejected) pair as of `snapshot` (default: now); see feedback.views for the rules."""
        with self._reading() as conn:
            return SnapshotReader(conn, self._resolve(conn, snapshot).action_id).preference_pairs()

    def preference_groups(self, snapshot: SnapshotLike = None) -> list[PreferenceGroup]:
        """The same pairs, gathered per prompt."""
        return group_pairs(self.preference_pairs(snapshot))

    def demonstrations(self, snapshot: SnapshotLike = None) -> list[Demonstration]:
        """Human-written replies and up-voted model replies, with their context."""
        with self._reading() as conn:
            return SnapshotReader(conn, self._resolve(conn, snapshot).action_id).demonstrations()

    def prompts(self, snapshot: SnapshotLike = None) -> list[Prompt]:
        """Every user turn with the chat before it."""
        with self._reading() as conn:
            return SnapshotReader(conn, self._resolve(conn, snapshot).action_id).prompts()

    def counts_since(self, since: SnapshotLike = None) -> FeedbackCounts:
        """What was added after `since`; by default after the snapshot of the last successful
        training run (everything, if none has succeeded)."""
        with self._reading() as conn:
            if since is None:
                row = conn.execute(
                    "SELECT snapshot_action_id FROM training_runs WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1"
                ).fetchone()
                since_id = row[0] if row else 0
            else:
                since_id = since.action_id if isinstance(since, Snapshot) else int(since)
            until_id = _last_action_id(conn)

            def count(sql: str) -> int:
                return int(conn.execute(sql + " AND action_id > ? AND action_id <= ?", [since_id, until_id]).fetchone()[0])

            # A reply rated and then given reasons has two rating rows: it is one rating.
            ratings = current_ratings(conn, as_of=until_id)
            num_ratings = sum(1 for r in ratings.values() if r.action_id > since_id)

            old_pairs = {(p.chosen_id, p.rejected_id) for p in SnapshotReader(conn, since_id).preference_pairs()}
            new_pairs = [p for p in SnapshotReader(conn, until_id).preference_pairs() if (p.chosen_id, p.rejected_id) not in old_pairs]
            return FeedbackCounts(
                since_action_id=since_id,
                until_action_id=until_id,
                num_user_messages=count("SELECT count(*) FROM messages WHERE role = 'user'"),
                num_replies=count("SELECT count(*) FROM messages WHERE role = 'assistant' AND is_human = 0"),
                num_demonstrations=count("SELECT count(*) FROM messages WHERE role = 'assistant' AND is_human = 1"),
                num_ratings=num_ratings,
                num_rankings=count("SELECT count(DISTINCT parent_id) FROM rankings WHERE is_rankable = 1"),
                num_new_pairs=len(new_pairs),
            )

    def counts_since_last_training(self) -> FeedbackCounts:
        return self.counts_since(None)

    def stats(self) -> FeedbackStats:
        """Counts per kind and per model version (what `chat-tui feedback stats` prints)."""
        with self._reading() as conn:
            return collect_stats(conn)

    def _resolve(self, conn: sqlite3.Connection, snapshot: SnapshotLike) -> Snapshot:
        if snapshot is None:
            return Snapshot(_last_action_id(conn), utc_now())
        if isinstance(snapshot, Snapshot):
            return snapshot
        return Snapshot(int(snapshot), "")


def _last_action_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM actions").fetchone()[0])
