"""The closed-loop benchmark's parts: prompt set and split, word counts, Wilson
intervals, the gain rule, KL along replies, perplexity, per-phase peak memory,
progress-log parsing. The tastes have their own file (test_loop_tastes.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from bench.loop import measures
from trainer.fluency import perplexity
from bench.loop.phases import run_measured
from bench.loop.prompt_set import KINDS, held_out_text, load_prompts, split_prompts
from bench.loop.runner import parse_progress_log
from bench.loop.tastes.text import count_words, distinct_share
from engine.loading import load_model
from tiny_models import make_tiny_model_dir


def test_prompt_set_has_200_distinct_prompts_in_four_kinds() -> None:
    prompts = load_prompts()
    assert len(prompts) == 200
    assert len({p.text.lower() for p in prompts}) == 200
    assert {k: sum(p.kind == k for p in prompts) for k in KINDS} == {k: 50 for k in KINDS}


def test_split_is_seeded_stratified_and_disjoint() -> None:
    prompts = load_prompts()
    split = split_prompts(prompts, 0.35, seed=0)
    again = split_prompts(prompts, 0.35, seed=0)
    other = split_prompts(prompts, 0.35, seed=1)
    assert [p.id for p in split.held_out] == [p.id for p in again.held_out]
    assert {p.id for p in split.held_out} != {p.id for p in other.held_out}
    assert not {p.id for p in split.train} & {p.id for p in split.held_out}
    assert len(split.train) + len(split.held_out) == 200
    assert {k: sum(p.kind == k for p in split.held_out) for k in KINDS} == {k: 18 for k in KINDS}


def test_bad_prompt_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"id": "a", "kind": "chat", "text": "hi"}\n{"id": "b", "kind": "chat"}\n')
    with pytest.raises(ValueError, match=r"prompts.jsonl:2"):
        load_prompts(path)


def test_words_are_counted_as_a_reader_counts_them() -> None:
    assert count_words("- Boil the water.\n- Add 2 eggs!") == 6
    assert count_words("1. Boil water\n2) Serve") == 3
    assert count_words("It's the cat's toy, isn't it?") == 6
    assert count_words("**Note:** 1. ok") == 3
    assert count_words("") == 0
    assert distinct_share("yes yes yes no") == 0.5


@pytest.mark.parametrize(
    "hits,total,low,high",
    [(5, 10, 0.236593, 0.763407), (0, 10, 0.0, 0.277533), (10, 10, 0.722467, 1.0), (30, 100, 0.218949, 0.395849)],
)
def test_wilson_interval_matches_the_formula_values(hits: int, total: int, low: float, high: float) -> None:
    got = measures.wilson_interval(hits, total)
    assert got == pytest.approx((low, high), abs=1e-5)
    rate = measures.rate([True] * hits + [False] * (total - hits))
    assert (rate.hits, rate.total, rate.value) == (hits, total, hits / total)


@pytest.mark.parametrize(
    "before,after,z,counts",
    [
        ((10, 72), (20, 72), 2.052, True),  # doubled and significant
        ((3, 72), (6, 72), 1.033, False),  # doubled but not significant: does not count
        ((30, 72), (43, 72), 2.167, False),  # significant, +18 points, not doubled: does not count
        ((30, 72), (46, 72), 2.671, True),  # significant and +22 points
        ((0, 72), (5, 72), 2.276, True),  # from nothing: any significant rise doubles it
        ((20, 72), (10, 72), -2.052, False),  # a fall never counts
    ],
)
def test_a_gain_counts_only_when_significant_and_large(before, after, z, counts) -> None:
    first = measures.rate([True] * before[0] + [False] * (before[1] - before[0]))
    second = measures.rate([True] * after[0] + [False] * (after[1] - after[0]))
    assert measures.two_proportion_z(first, second) == pytest.approx(z, abs=1e-3)
    assert measures.gain_counts(first, second) is counts


@pytest.fixture(scope="module")
def two_tiny_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    first = load_model(make_tiny_model_dir(folder / "a", seed=0))
    second = load_model(make_tiny_model_dir(folder / "b", seed=1))
    return first, second


def test_kl_along_replies_is_zero_to_itself_and_matches_per_position_kl(two_tiny_models) -> None:
    first, second = two_tiny_models
    prompts = [first.encode_chat([{"role": "user", "content": "Hello there"}]), first.encode_chat([{"role": "user", "content": "Paris?"}])]
    replies = [[40, 41, 42, 43], [50, 51]]
    same = measures.kl_along_replies(first.model, first.model, prompts, replies)
    assert same.per_reply == pytest.approx(0.0, abs=1e-5) and same.num_tokens == 6
    got = measures.kl_along_replies(first.model, second.model, prompts, replies)
    expected = []
    with torch.no_grad():
        for prompt, reply in zip(prompts, replies):
            total = 0.0
            for t in range(len(reply)):  # one position at a time, through torch.distributions
                context = torch.tensor([prompt + reply[:t]])
                p = torch.distributions.Categorical(logits=first.model(context)[0, -1])
                q = torch.distributions.Categorical(logits=second.model(context)[0, -1])
                total += float(torch.distributions.kl_divergence(p, q))
            expected.append(total)
    assert got.per_reply == pytest.approx(sum(expected) / 2, rel=1e-4)
    assert got.per_token == pytest.approx(sum(expected) / 6, rel=1e-4)


def test_perplexity_is_exp_mean_nll_over_windows(two_tiny_models) -> None:
    first, _ = two_tiny_models
    ids = first.tokenizer.encode(held_out_text())[:40]
    with torch.no_grad():
        logits = first.model(torch.tensor([ids[:-1]]))[0]
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]))
    assert perplexity(first.model, ids, window=512) == pytest.approx(math.exp(float(nll)), rel=1e-5)
    # Windows of 10: each predicts its own 10 tokens from its own context only.
    total = 0.0
    with torch.no_grad():
        for start in range(0, 39, 10):
            chunk = ids[start : start + 11]
            out = first.model(torch.tensor([chunk[:-1]]))[0]
            total += float(torch.nn.functional.cross_entropy(out, torch.tensor(chunk[1:]), reduction="sum"))
    assert perplexity(first.model, ids, window=10) == pytest.approx(math.exp(total / 39), rel=1e-5)


_PHASE_PEAKS = """
import json
from bench.loop.phases import measured
records = []
with measured("big", records):
    block = bytearray(200 * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    del block
with measured("small", records):
    pass
print(json.dumps([[r.peak_rss_mb, r.peak_is_lifetime] for r in records]))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_each_phase_gets_its_own_peak_memory() -> None:
    # In a fresh process: after a long test session the allocator may serve the block from
    # memory the process already holds, which would not raise its resident size.
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _PHASE_PEAKS], capture_output=True, text=True, check=True)
    (big_peak, big_lifetime), (small_peak, _) = json.loads(out.stdout)
    assert not big_lifetime
    assert big_peak - small_peak > 150


def test_subprocess_phase_reports_the_child_peak_and_exit_code(tmp_path: Path) -> None:
    records = []
    code = "b = bytearray(150 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('done'); raise SystemExit(3)"
    lines = []
    returncode = run_measured("child", [sys.executable, "-c", code], records, tmp_path / "child.log", echo=lines.append)
    assert returncode == 3 and records[0].notes["returncode"] == 3
    assert records[0].peak_rss_mb > 150
    assert (tmp_path / "child.log").read_text() == "done\n" and lines == ["  [child] done"]


def test_progress_lines_in_a_log_become_curves(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text(
        "base model: tiny\n"
        "reward   [############............] 5/10 eta 0:03  loss 0.61  accuracy 0.75\n"
        "dpo      [########################] 30/30 1:02  loss 0.4  margin 1.5e-01\n"
    )
    curves = parse_progress_log(log)
    assert curves == {
        "reward": [{"step": 5.0, "total": 10.0, "loss": 0.61, "accuracy": 0.75}],
        "dpo": [{"step": 30.0, "total": 30.0, "loss": 0.4, "margin": 0.15}],
    }


def test_every_benchmark_command_and_option_has_help_text() -> None:
    from click.testing import CliRunner

    from bench.loop.__main__ import cli

    for name, command in cli.commands.items():
        assert (command.help or "").strip(), name
        for param in command.params:
            assert (getattr(param, "help", "") or "").strip(), (name, param.opts)
        assert CliRunner().invoke(cli, [name, "--help"]).exit_code == 0


@pytest.mark.parametrize(
    "args,named",
    [
        (["run", "--taste", "nope"], "'nope' is not a known taste"),
        (["run", "--taste", "short,lists"], "`run` takes one taste"),
        (["matrix", "--tastes", "short,nope"], "'nope' is not a known taste"),
        (["matrix", "--tastes", "short,short"], "names a taste twice"),
        (["matrix", "--algos", "dpo,sft"], "'sft' is not one of ppo, dpo"),
        (["run", "--k", "7"], "k must be between 2 and 4, got 7"),
        (["run", "--train-prompts", "0"], "must be at least 1, got 0"),
        (["run", "--max-taught", "-1"], "must be at least 0, got -1"),
    ],
)
def test_bad_benchmark_arguments_fail_with_one_line_naming_the_value(tmp_path: Path, args: list[str], named: str) -> None:
    from click.testing import CliRunner

    from bench.loop.__main__ import cli

    result = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and named in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing was started
