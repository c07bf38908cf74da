"""Failures while writing the store, the database or an output: one line, nothing changed.

A really full disk and a really read-only folder come from a private mount namespace
(tests/cli_contract.py `in_namespace`; skipped where user namespaces are not allowed):
the command runs with the folder on a tmpfs with no room left, or mounted read-only,
and the folder's listing as the command left it is compared with the listing before.
Other failures (deeply nested or non-Unicode JSON, a taken name, a missing --base) need
no namespace. Every CLI case runs under the 3 GB address-space limit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cli_contract import (
    assert_one_line_error,
    database_state,
    in_namespace,
    listing,
    needs_namespaces,
    read_report,
    run_cli,
)
from feedback import Store
from tiny_models import make_tiny_model_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "tiny")


def pairs_file(path: Path, count: int = 3, text: str = "reply") -> Path:
    lines = [json.dumps({"prompt": f"question {i}", "chosen": f"good {text} {i}", "rejected": f"bad {text} {i}"})
             for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def home_with_feedback(tmp_path):
    """A data directory whose database already holds some feedback."""
    home = tmp_path / "home"
    home.mkdir()
    with Store(home / "feedback.db") as store:
        store.import_pairs(pairs_file(tmp_path / "first.jsonl"))
    return home


# -- feedback import: malformed input -----------------------------------------------------


@pytest.mark.parametrize("line,expected", [
    ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    ('{"prompt": "p", "chosen": "ok \\ud800", "rejected": "r"}', "lone surrogate \\ud800"),
    ('{"prompt": "p \\udfff", "chosen": "a", "rejected": "r"}', "message 1 holds a lone surrogate"),
    ('{"prompt": "p", "chosen": "a", "rejected": "r"}\n\xff\xfe', "line 2: not UTF-8"),
    ('{"prompt": "p", "chosen": ' + '{"deep": ' * 50 + "1" + "}" * 50 + ', "rejected": "r"}',
     "'chosen' must be a non-empty list"),
], ids=["deep_nesting", "lone_surrogate", "surrogate_in_prompt", "binary", "nested_object"])
def test_feedback_import_of_malformed_json_changes_nothing(line, expected, tmp_path, home_with_feedback):
    source = tmp_path / "bad.jsonl"
    source.write_bytes(line.encode("utf-8", "surrogateescape") if "\xff" not in line
                       else line.encode("latin-1"))
    before = database_state(home_with_feedback / "feedback.db")
    result = run_cli("feedback", "import", str(source), home=home_with_feedback)
    assert_one_line_error(result, "bad.jsonl", expected)
    assert database_state(home_with_feedback / "feedback.db") == before


def test_feedback_import_of_a_bad_file_creates_no_database(tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"prompt": "p", "chosen": "\\ud800", "rejected": "r"}\n')
    home = tmp_path / "home"
    result = run_cli("feedback", "import", str(source), home=home)
    assert_one_line_error(result, "lone surrogate")
    assert listing(home) == []


def test_an_overlong_line_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
    import feedback.importing as importing
    from feedback.errors import ImportFormatError

    monkeypatch.setattr(importing, "MAX_LINE_BYTES", 1000)
    source = tmp_path / "long.jsonl"
    source.write_text(json.dumps({"prompt": "p", "chosen": "x" * 5000, "rejected": "r"}) + "\n")
    with pytest.raises(ImportFormatError, match="line 1: longer than"):
        importing.read_pairs_file(source)


# -- full disks and read-only folders -------------------------------------------------------


@needs_namespaces
def test_feedback_import_on_a_full_disk_says_so_and_keeps_the_database(tmp_path, home_with_feedback):
    before = listing(home_with_feedback)
    report = tmp_path / "report"
    source = pairs_file(tmp_path / "more.jsonl", count=200, text="x" * 500)
    result = run_cli("feedback", "import", str(source), home=home_with_feedback,
                     wrap=in_namespace(home_with_feedback, report, free_kb=0))
    line = assert_one_line_error(result, "feedback.db", "the disk is full (ENOSPC)")
    assert "not a chat-tui feedback database" not in line
    assert read_report(report) == before


@needs_namespaces
def test_feedback_import_that_fills_the_disk_half_way_commits_nothing(tmp_path, home_with_feedback):
    before = listing(home_with_feedback)
    report = tmp_path / "report"
    source = pairs_file(tmp_path / "more.jsonl", count=400, text="y" * 2000)  # about 1.6 MB of text
    result = run_cli("feedback", "import", str(source), home=home_with_feedback,
                     wrap=in_namespace(home_with_feedback, report, free_kb=300))
    assert_one_line_error(result, "feedback.db", "the disk is full (ENOSPC)")
    assert read_report(report) == before


@needs_namespaces
@pytest.mark.parametrize("args", [["feedback", "stats"], ["feedback", "export", "--format", "pairs"]])
def test_opening_the_database_on_a_full_disk_is_not_called_corrupt(args, tmp_path, home_with_feedback):
    report = tmp_path / "report"
    result = run_cli(*args, home=home_with_feedback, wrap=in_namespace(home_with_feedback, report, free_kb=0))
    if result.returncode != 0:  # reading may need no new space; when it does, say why it failed
        line = assert_one_line_error(result, "feedback.db")
        assert "not a chat-tui feedback database" not in line and "disk is full (ENOSPC)" in line
    assert read_report(report) == listing(home_with_feedback)


@needs_namespaces
def test_a_first_run_on_a_full_disk_leaves_no_empty_database(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    report = tmp_path / "report"
    result = run_cli("feedback", "import", str(pairs_file(tmp_path / "p.jsonl")), home=home,
                     wrap=in_namespace(home, report, free_kb=0))
    assert_one_line_error(result, "the disk is full (ENOSPC)")
    assert read_report(report) == []


READ_ONLY_OR_FULL = pytest.mark.parametrize(
    "limit,reason", [({"read_only": True}, "read-only (EROFS)"), ({"free_kb": 64}, "the disk is full (ENOSPC)")],
    ids=["read_only", "full"])


@needs_namespaces
@READ_ONLY_OR_FULL
def test_models_import_into_a_store_that_refuses_it_says_why(limit, reason, tmp_path, tiny):
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    report = tmp_path / "report"
    result = run_cli("models", "import", str(tiny), "--name", "tiny", home=home,
                     wrap=in_namespace(home / "models", report, **limit))
    assert_one_line_error(result, str(home / "models" / "tiny"), reason)
    assert read_report(report) == []  # no staging folder left


@needs_namespaces
@READ_ONLY_OR_FULL
def test_models_export_to_a_folder_that_refuses_it_says_why(limit, reason, tmp_path, tiny):
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("untouched")
    report = tmp_path / "report"
    result = run_cli("models", "export", str(tiny), "-o", str(out / "tiny.gguf"), "--type", "f32",
                     home=tmp_path / "home", wrap=in_namespace(out, report, **limit))
    assert_one_line_error(result, str(out / "tiny.gguf"), reason)
    assert read_report(report) == listing(out)  # no partial file beside what was there


@needs_namespaces
def test_feedback_export_to_a_read_only_folder_says_so(tmp_path, home_with_feedback):
    out = tmp_path / "out"
    out.mkdir()
    before = database_state(home_with_feedback / "feedback.db")
    report = tmp_path / "report"
    result = run_cli("feedback", "export", "--format", "pairs", "-o", str(out / "pairs.jsonl"),
                     home=home_with_feedback, wrap=in_namespace(out, report, read_only=True))
    assert_one_line_error(result, "pairs.jsonl", "read-only")
    assert read_report(report) == []
    assert database_state(home_with_feedback / "feedback.db") == before


@needs_namespaces
def test_a_read_only_data_directory_is_one_line(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    report = tmp_path / "report"
    result = run_cli("feedback", "import", str(pairs_file(tmp_path / "p.jsonl")), home=home,
                     wrap=in_namespace(home, report, read_only=True))
    assert_one_line_error(result, "read-only")
    assert read_report(report) == []


# -- rows only for things that exist ----------------------------------------------------------


def test_train_base_that_does_not_exist_adds_no_row(tmp_path, home_with_feedback):
    before = database_state(home_with_feedback / "feedback.db")
    result = run_cli("train", "--base", str(tmp_path / "nonexistent"), "--device", "cpu", home=home_with_feedback)
    assert_one_line_error(result, "nonexistent", "no such file or directory")
    assert database_state(home_with_feedback / "feedback.db") == before


def test_train_base_on_a_fresh_install_creates_nothing(tmp_path):
    home = tmp_path / "home"
    result = run_cli("train", "--base", "/nonexistent/model", "--device", "cpu", home=home)
    assert_one_line_error(result, "/nonexistent/model")
    assert listing(home) == []


def test_train_base_that_is_not_a_model_adds_no_row(tmp_path, home_with_feedback):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    before = database_state(home_with_feedback / "feedback.db")
    result = run_cli("train", "--base", str(folder), "--device", "cpu", home=home_with_feedback)
    assert_one_line_error(result, "not-a-model", "no config.json")
    assert database_state(home_with_feedback / "feedback.db") == before


def test_a_relative_base_is_recorded_as_an_absolute_path(tmp_path, tiny):
    import shutil

    from chat_tui.services.bootstrap import ModelChoice, register_loaded

    work = tmp_path / "work"
    shutil.copytree(tiny, work / "tiny")
    os.chdir(work)  # the test's own working folder; pytest restores nothing, so go back below
    try:
        with Store(tmp_path / "feedback.db") as store:
            version_id = register_loaded(store, ModelChoice("tiny", None, "tiny"), "tiny")
            assert store.get_model_version(version_id).path == str(work / "tiny")
            assert register_loaded(store, ModelChoice("./tiny", None, "tiny"), "./tiny") == version_id
    finally:
        os.chdir(Path(__file__).parent)


def test_train_records_a_relative_base_absolute(tmp_path, tiny, home_with_feedback):
    import shutil

    shutil.copytree(tiny, tmp_path / "tiny")
    run_cli("train", "--base", "tiny", "--dry-run", "--device", "cpu", home=home_with_feedback, cwd=tmp_path,
            timeout=600)
    with Store(home_with_feedback / "feedback.db") as store:
        paths = [v.path for v in store.list_model_versions()]
    assert paths == [str(tmp_path / "tiny")]


def test_pretrain_out_that_is_taken_refuses_before_training(tmp_path, home_with_feedback):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text to train on. " * 2000)
    with Store(home_with_feedback / "feedback.db") as store:
        store.register_model_version("taken", str(tmp_path / "elsewhere"))
    before = (database_state(home_with_feedback / "feedback.db"), listing(home_with_feedback))
    result = run_cli("pretrain", "--data", str(corpus), "--out", "taken", "--steps", "5", "--device", "cpu",
                     home=home_with_feedback, timeout=120)
    assert_one_line_error(result, "--out 'taken'", "choose another")
    assert (database_state(home_with_feedback / "feedback.db"), listing(home_with_feedback)) == before
