"""feedback: the SQLite store of conversations, ratings, rankings, demonstrations, model
versions and training runs. Imports no torch (and nothing of chat_tui).

    from feedback import Store
    store = Store(path)          # opens the file (mode 0600), runs pending migrations

The caller passes the path (the CLI uses `chat_tui.paths.database_path()`). Every method is
one transaction; results are plain dataclasses from `feedback.records`; bad input raises a
`feedback.errors.FeedbackError` subclass whose message names the bad value. A Store may be
shared by the threads of one process; each process opens its own (WAL: the chat writes
while a trainer reads).

Chat UI
    create_conversation(title="", system_prompt=None) -> Conversation
    list_conversations(limit=None, offset=0) -> [Conversation]     most recently active first
    load_conversation(cid) -> ConversationTree     .messages, .shown_path, .ratings, .rankings,
                                                   .children(mid), .siblings(mid)
    add_user_message(cid, text, parent_id=None) -> Message          None: after the shown path
    add_assistant_reply(user_mid, text, model_version_id, sampling={...}, finish_reason) -> Message
    add_assistant_replies(user_mid, [ReplyDraft, ...], show_index=0) -> [Message]   k alternatives
    add_sibling(mid, text, ...) -> Message            edit a user turn / another reply
    save_demonstration(user_mid, text) -> Message     the reply the user wrote (is_human)
    switch_path(mid) -> [Message]                     show the branch through mid
    rate(reply_mid, +1 | -1, tags=[...], comment=None) -> Rating;  clear_rating(reply_mid)
    rank(user_mid, [best_mid, ..., worst_mid]) -> Ranking;  mark_not_rankable(user_mid)
    rename_conversation(cid, title); set_system_prompt(cid, text|None); delete_conversation(cid)
    search_conversations(text, limit=50) -> [SearchHit]            FTS5, words matched literally
    record_arena_choice(first_mid, second_mid, "first"|"second"|"tie"|"both_bad", tags, comment)
    arena_choices() -> [ArenaChoice];  leaderboard() -> [Strength];  head_to_head(version_a, version_b)
    get_setting(key, default) / set_setting(key, json_value)       e.g. remembered sampling settings

Model versions and training runs
    register_model_version(name, path, source="import"|"train", parent_id, metrics, activate)
    list_model_versions(); get_model_version(id|name); activate_model_version(id|name)
    mark_model_version_removed(id|name)          its files are gone; the row (and its history) stays
    active_model_version() -> ModelVersion | None;  set_model_version_metrics(id|name, {...})
    start_training_run(kind, config, base_version_id, snapshot=None) -> TrainingRun  (records the snapshot)
    update_training_run(run_id, metrics);  finish_training_run(run_id, status, result_version_id, metrics, error)
    last_training_run(status="succeeded"); list_training_runs()

Trainer (each takes snapshot=None (now) | Snapshot | action id, e.g. run.snapshot_action_id)
    snapshot() -> Snapshot
    training_data(snapshot) -> TrainingData(pairs, demonstrations, prompts)   one transaction
    preference_pairs(snapshot) -> [PreferencePair]   context (messages up to the user turn),
                                                     chosen, rejected, ids, group_key, source
    preference_groups(snapshot) -> [PreferenceGroup]  the pairs gathered per prompt
    demonstrations(snapshot) -> [Demonstration]      human-written and up-voted replies
    prompts(snapshot) -> [Prompt]                    every user turn with its context
    counts_since_last_training() -> FeedbackCounts
    stats() -> FeedbackStats

Pairs per user turn: every (better, worse) pair of its ranking (4 replies -> 6 pairs); each
up-voted reply over each down-voted sibling; each human-written reply over each down-voted
sibling (not over unrated ones). Each pair appears once; a ranking wins over thumbs that
disagree with it. Snapshots: the views see only actions up to the snapshot, so a running
trainer reads a stable set; a deleted conversation leaves every view.

Exchange: `feedback.exporting.export_rows(store, "pairs"|"sft"|"trees"|"trl"|"kto")`,
`export_to_file(...)`, `store.import_pairs(jsonl_path)`, `store.import_openwebui(json_path)`
(all or nothing, and idempotent; see feedback.importing and feedback.openwebui).
"""

from feedback.errors import (
    DatabaseFileError,
    FeedbackError,
    ImportFormatError,
    InvalidFeedbackError,
    NotFoundError,
    SchemaTooNewError,
)
from feedback.records import (
    ArenaChoice,
    Conversation,
    ConversationTree,
    Demonstration,
    FeedbackCounts,
    Message,
    ModelVersion,
    PreferenceGroup,
    PreferencePair,
    Prompt,
    Ranking,
    Rating,
    ReplyDraft,
    SearchHit,
    Snapshot,
    TrainingData,
    TrainingRun,
)

def __getattr__(name: str):
    # Store (and sqlite-utils behind it) loads on first use, so importing feedback.errors,
    # which the CLI does on every run, stays cheap.
    if name == "Store":
        from feedback.store import Store

        return Store
    raise AttributeError(f"module 'feedback' has no attribute {name!r}")


__all__ = [
    "ArenaChoice",
    "Conversation",
    "ConversationTree",
    "DatabaseFileError",
    "Demonstration",
    "FeedbackCounts",
    "FeedbackError",
    "ImportFormatError",
    "InvalidFeedbackError",
    "Message",
    "ModelVersion",
    "NotFoundError",
    "PreferenceGroup",
    "PreferencePair",
    "Prompt",
    "Ranking",
    "Rating",
    "ReplyDraft",
    "SchemaTooNewError",
    "SearchHit",
    "Snapshot",
    "Store",
    "TrainingData",
    "TrainingRun",
]
