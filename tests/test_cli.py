"""The command line: every command documents itself; bench runs end to end on a tiny model."""

from __future__ import annotations

import json

import click
from click.testing import CliRunner

from chat_tui.cli import COMMANDS, cli
from tiny_models import make_tiny_model_dir


def _walk(command: click.Command, ctx: click.Context, path: str):
    yield path, command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx), f"{path} {name}")


def test_every_command_has_help_text():
    ctx = click.Context(cli, info_name="chat-tui")
    seen = dict(_walk(cli, ctx, "chat-tui"))
    assert {f"chat-tui {name}" for name in COMMANDS} <= set(seen)
    for path, command in seen.items():
        assert (command.help or "").strip(), f"{path} has no help text"
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert (param.help or "").strip() or param.is_flag and param.name in ("version",), (
                    f"{path} option {param.opts} has no help text"
                )
        result = CliRunner().invoke(cli, path.split()[1:] + ["--help"])
        assert result.exit_code == 0, (path, result.output)


def test_bench_reports_every_level_and_the_hf_ratio(tmp_path):
    directory = make_tiny_model_dir(tmp_path / "tiny")
    result = CliRunner().invoke(
        cli, ["bench", "--model", str(directory), "--concurrency", "1,4", "--max-tokens", "8", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [level["concurrency"] for level in report["levels"]] == [1, 4]
    for level in report["levels"]:
        assert level["decode_tokens_per_s"] > 0 and level["e2e_tokens_per_s"] > 0
        assert level["hf_e2e_tokens_per_s"] > 0 and level["ratio_vs_hf"] > 0
    assert report["bandwidth_gb_s"] > 0 and report["roofline_tokens_per_s"] > 0
    assert report["load_s"] > 0


def test_bench_rejects_bad_concurrency():
    result = CliRunner().invoke(cli, ["bench", "--concurrency", "1,x"])
    assert result.exit_code != 0
    assert "1,x" in result.output


def test_every_packages_user_error_reads_as_its_own_message_and_a_bug_shows_its_type():
    from chat_tui.errors import UserError, describe_error
    from engine.errors import ModelLoadError
    from feedback.errors import NotFoundError
    from trainer.errors import NotEnoughFeedbackError

    for error in (UserError("'x' is bad"), ModelLoadError("'x' is bad"), NotFoundError("'x' is bad"),
                  NotEnoughFeedbackError("'x' is bad")):
        assert describe_error(error) == "'x' is bad"
    assert describe_error(KeyError("x")) == "KeyError: 'x'"


def test_bench_quant_reports_speed_and_the_quality_cost(tmp_path):
    directory = make_tiny_model_dir(tmp_path / "tiny")
    result = CliRunner().invoke(
        cli, ["bench", "--model", str(directory), "--concurrency", "1", "--max-tokens", "8", "--quant", "q8_0", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["quant"] == "q8_0"
    assert report["levels"][0]["decode_tokens_per_s"] > 0 and report["levels"][0]["hf_e2e_tokens_per_s"] is None
    quality = report["quality"]
    assert quality["quant"] == "q8_0" and quality["tokens"] >= 128
    assert 0 < quality["kl_to_fp32"] < 0.01 and 0.5 < quality["top1_agreement"] <= 1
    assert quality["perplexity"] > 1 and quality["fp32_perplexity"] > 1
