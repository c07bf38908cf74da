"""Model versions, training runs, and the UI's key/value settings.

A model version is a directory of weights somewhere on disk (the store keeps its path, not
the files), where it came from (import or train), its parent version and metrics. Exactly
one version at most is active: the one the chat uses. A training run records what it
trained, on which feedback snapshot, how it went, and the version it produced.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from feedback.database import StoreBase, record_from_row, utc_now
from feedback.errors import InvalidFeedbackError, NotFoundError
from feedback.records import ModelVersion, Snapshot, TrainingRun

VERSION_SOURCES = ("import", "train")
FINISHED_STATUSES = ("succeeded", "failed", "cancelled", "abandoned")
RESUMABLE_STATUSES = ("running", "failed", "cancelled")  # an interrupted run may continue


def to_json(value: Any, what: str) -> str:
    """JSON text of `value`, or an InvalidFeedbackError naming what could not be stored."""
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidFeedbackError(f"{what} cannot be stored as JSON: {exc}") from exc


def version_from_row(row: sqlite3.Row) -> ModelVersion:
    return record_from_row(ModelVersion, row, json_columns=("metrics",), flag_columns=("is_active",))


def run_from_row(row: sqlite3.Row) -> TrainingRun:
    return record_from_row(TrainingRun, row, json_columns=("config", "metrics"))


class VersionsMixin(StoreBase):
    """Model versions, training runs and settings operations of the Store."""

    # ---- model versions ----------------------------------------------------------------------

    def register_model_version(
        self,
        name: str,
        path: str,
        source: str = "import",
        parent_id: int | None = None,
        metrics: dict[str, Any] | None = None,
        activate: bool = False,
    ) -> ModelVersion:
        """Record a model directory as a new version (optionally making it the active one)."""
        if not name.strip():
            raise InvalidFeedbackError("a model version needs a name")
        if source not in VERSION_SOURCES:
            raise InvalidFeedbackError(f"model version source {source!r} is not one of {', '.join(VERSION_SOURCES)}")
        metrics_json = to_json(metrics or {}, "model version metrics")
        now = utc_now()
        with self._writing() as conn:
            if conn.execute("SELECT 1 FROM model_versions WHERE name = ?", [name]).fetchone():
                raise InvalidFeedbackError(f"model version name {name!r} is already taken")
            if parent_id is not None:
                self._version(conn, parent_id)
            cursor = conn.execute(
                """INSERT INTO model_versions (name, path, parent_id, source, metrics, is_active, created_at)
                   VALUES (?, ?, ?, ?, ?, 0, ?)""",
                [name, str(path), parent_id, source, metrics_json, now],
            )
            version_id = int(cursor.lastrowid)
            if activate:
                self._activate(conn, version_id)
            return self._version(conn, version_id)

    def list_model_versions(self) -> list[ModelVersion]:
        """Every version, oldest first."""
        with self._reading() as conn:
            return [version_from_row(row) for row in self._rows(conn, "SELECT * FROM model_versions ORDER BY id")]

    def get_model_version(self, version: int | str) -> ModelVersion:
        """A version by id or by name."""
        with self._reading() as conn:
            return self._version(conn, version)

    def activate_model_version(self, version: int | str) -> ModelVersion:
        """Make `version` (id or name) the one the chat uses."""
        with self._writing() as conn:
            found = self._version(conn, version)
            if found.is_removed:
                raise InvalidFeedbackError(f"model version {found.name!r} was removed; its files are gone")
            self._activate(conn, found.id)
            return self._version(conn, found.id)

    def mark_model_version_removed(self, version: int | str) -> ModelVersion:
        """Record that a version's files were removed. Its row stays: replies, arena choices
        and the lineage still name it. The active version cannot be removed."""
        with self._writing() as conn:
            found = self._version(conn, version)
            if found.is_active:
                raise InvalidFeedbackError(f"model version {found.name!r} is the active one; activate another first")
            if not found.is_removed:
                conn.execute("UPDATE model_versions SET removed_at = ? WHERE id = ?", [utc_now(), found.id])
            return self._version(conn, found.id)

    def active_model_version(self) -> ModelVersion | None:
        with self._reading() as conn:
            row = self._row(conn, "SELECT * FROM model_versions WHERE is_active = 1")
        return version_from_row(row) if row else None

    def set_model_version_metrics(self, version: int | str, metrics: dict[str, Any]) -> ModelVersion:
        """Merge `metrics` into the version's metrics (e.g. evaluation results)."""
        with self._writing() as conn:
            current = self._version(conn, version)
            merged = {**current.metrics, **metrics}
            conn.execute(
                "UPDATE model_versions SET metrics = ? WHERE id = ?", [to_json(merged, "model version metrics"), current.id]
            )
            return self._version(conn, current.id)

    # ---- training runs ------------------------------------------------------------------------

    def start_training_run(
        self,
        kind: str,
        config: dict[str, Any] | None = None,
        base_version_id: int | None = None,
        snapshot: Snapshot | int | None = None,
    ) -> TrainingRun:
        """Record a run as started. With no snapshot given, it uses the feedback as of now;
        read the training views with `run.snapshot_action_id` so the run sees exactly that."""
        if not kind.strip():
            raise InvalidFeedbackError("a training run needs a kind (e.g. 'reward', 'ppo', 'dpo', 'sft')")
        config_json = to_json(config or {}, "training run config")
        now = utc_now()
        with self._writing() as conn:
            if base_version_id is not None:
                self._version(conn, base_version_id)
            if snapshot is None:
                snapshot_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM actions").fetchone()[0]
            else:
                snapshot_id = snapshot.action_id if isinstance(snapshot, Snapshot) else int(snapshot)
            cursor = conn.execute(
                """INSERT INTO training_runs (kind, config, status, metrics, snapshot_action_id, base_version_id, started_at)
                   VALUES (?, ?, 'running', '{}', ?, ?, ?)""",
                [kind, config_json, snapshot_id, base_version_id, now],
            )
            return self._run(conn, int(cursor.lastrowid))

    def update_training_run(self, run_id: int, metrics: dict[str, Any]) -> TrainingRun:
        """Merge progress metrics into a running run."""
        with self._writing() as conn:
            run = self._run(conn, run_id)
            merged = to_json({**run.metrics, **metrics}, "training run metrics")
            conn.execute("UPDATE training_runs SET metrics = ? WHERE id = ?", [merged, run_id])
            return self._run(conn, run_id)

    def finish_training_run(
        self,
        run_id: int,
        status: str = "succeeded",
        result_version_id: int | None = None,
        metrics: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> TrainingRun:
        """Close a running run with its outcome and, on success, the version it produced."""
        if status not in FINISHED_STATUSES:
            raise InvalidFeedbackError(f"training run status {status!r} is not one of {', '.join(FINISHED_STATUSES)}")
        now = utc_now()
        with self._writing() as conn:
            run = self._run(conn, run_id)
            if run.status != "running":
                raise InvalidFeedbackError(f"training run {run_id} has already finished ({run.status})")
            if result_version_id is not None:
                self._version(conn, result_version_id)
            merged = to_json({**run.metrics, **(metrics or {})}, "training run metrics")
            conn.execute(
                """UPDATE training_runs SET status = ?, result_version_id = ?, metrics = ?, error = ?, finished_at = ?
                   WHERE id = ?""",
                [status, result_version_id, merged, error, now, run_id],
            )
            return self._run(conn, run_id)

    def reopen_training_run(self, run_id: int) -> TrainingRun:
        """Mark a cancelled, failed or interrupted run running again, to resume it."""
        with self._writing() as conn:
            run = self._run(conn, run_id)
            if run.status not in RESUMABLE_STATUSES:
                raise InvalidFeedbackError(f"training run {run_id} cannot be resumed ({run.status})")
            conn.execute("UPDATE training_runs SET status = 'running', error = NULL, finished_at = NULL WHERE id = ?",
                         [run_id])
            return self._run(conn, run_id)

    def abandon_training_run(self, run_id: int, reason: str) -> TrainingRun:
        """Close an interrupted (running, failed or cancelled) run for good: it will not be resumed."""
        with self._writing() as conn:
            run = self._run(conn, run_id)
            if run.status not in RESUMABLE_STATUSES:
                raise InvalidFeedbackError(f"training run {run_id} has already finished ({run.status})")
            conn.execute("UPDATE training_runs SET status = 'abandoned', error = ?, finished_at = ? WHERE id = ?",
                         [reason, utc_now(), run_id])
            return self._run(conn, run_id)

    def get_training_run(self, run_id: int) -> TrainingRun:
        with self._reading() as conn:
            return self._run(conn, run_id)

    def list_training_runs(self) -> list[TrainingRun]:
        """Every run, oldest first."""
        with self._reading() as conn:
            return [run_from_row(row) for row in self._rows(conn, "SELECT * FROM training_runs ORDER BY id")]

    def last_training_run(self, status: str | None = "succeeded") -> TrainingRun | None:
        """The newest run with that status (any status when None)."""
        where, params = ("WHERE status = ?", [status]) if status else ("", [])
        with self._reading() as conn:
            row = self._row(conn, f"SELECT * FROM training_runs {where} ORDER BY id DESC LIMIT 1", params)
        return run_from_row(row) if row else None

    # ---- settings -------------------------------------------------------------------------------

    def get_setting(self, key: str, default: Any = None) -> Any:
        """A JSON value the UI saved under `key` (e.g. its sampling settings), or `default`."""
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else default

    def set_setting(self, key: str, value: Any) -> None:
        value_json = to_json(value, f"setting {key!r}")
        with self._writing() as conn:
            conn.execute(
                """INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)
                   ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at""",
                [key, value_json, utc_now()],
            )

    def delete_setting(self, key: str) -> None:
        with self._writing() as conn:
            conn.execute("DELETE FROM settings WHERE key = ?", [key])

    # ---- helpers ----------------------------------------------------------------------------------

    def _version(self, conn: sqlite3.Connection, version: int | str) -> ModelVersion:
        if isinstance(version, str):
            row = self._row(conn, "SELECT * FROM model_versions WHERE name = ?", [version])
        else:
            row = self._row(conn, "SELECT * FROM model_versions WHERE id = ?", [version])
        if row is None:
            raise NotFoundError(f"{version!r} is not a known model version")
        return version_from_row(row)

    def _activate(self, conn: sqlite3.Connection, version_id: int) -> None:
        conn.execute("UPDATE model_versions SET is_active = 0 WHERE is_active = 1 AND id != ?", [version_id])
        conn.execute("UPDATE model_versions SET is_active = 1 WHERE id = ?", [version_id])

    def _run(self, conn: sqlite3.Connection, run_id: int) -> TrainingRun:
        row = self._row(conn, "SELECT * FROM training_runs WHERE id = ?", [run_id])
        if row is None:
            raise NotFoundError(f"training run {run_id!r} does not exist")
        return run_from_row(row)
