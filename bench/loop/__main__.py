"""`python -m bench.loop run|matrix|candidates|baseline|tastes`: the closed-loop benchmark's command line."""

from __future__ import annotations

import functools
import json
import shlex
import sys
from pathlib import Path

import click

DEFAULT_OUT = Path("bench/out/loop")
from trainer.algorithms import ALGORITHMS, DEFAULT_ALGORITHM

ALGOS = tuple(ALGORITHMS)


def loop_options(function):
    """The options every command that samples the base model shares."""
    options = [
        click.option("--out", "out_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True,
                     help="Output directory (candidates.json, base-models/, and each run's home/, wiped at its start)."),
        click.option("--model", default=None, help="Base model directory or .gguf (default: the default model)."),
        click.option("--k", default=4, show_default=True, help="Alternatives per prompt (2-4, as in compare mode)."),
        click.option("--train-prompts", type=int, default=None, help="Rank only the first N training prompts (default: all)."),
        click.option("--held-out-prompts", type=int, default=None, help="Evaluate on the first N held-out prompts (default: all)."),
        click.option("--seed", default=0, show_default=True, help="Seed for sampling and training."),
        click.option("--split-seed", default=0, show_default=True, help="Seed of the train / held-out split."),
        click.option("--max-new-tokens", type=int, default=None, help="Longest reply (default: the chat's 256)."),
        click.option("--threads", type=int, default=None, help="Torch threads here and OMP_NUM_THREADS for the trainer."),
        click.option("--prompts-per-batch", default=32, show_default=True, help="Prompts handed to the engine together."),
        click.option("--max-batch-rows", default=32, show_default=True, help="Sequences the engine decodes at once."),
        click.option("--prompts-file", type=click.Path(path_type=Path, exists=True), default=None,
                     help="Another prompt set (JSONL)."),
        click.option("--candidates", "candidates_path", type=click.Path(path_type=Path), default=None,
                     help="The candidate cache to use or write (default: OUT/candidates.json)."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), function)


def training_options(function):
    options = [
        click.option("--algo", "algos", multiple=True, type=click.Choice(ALGOS),
                     help=f"Repeatable (default: {DEFAULT_ALGORITHM}, chat-tui train's default)."),
        click.option("--algos", "algo_list", default="", help="The same as a comma-separated list, e.g. 'dpo' or 'ppo,dpo'."),
        click.option("--max-taught", default=10, show_default=True,
                     help="At most this many prompts get a reply written by the user (when none of the k pleases them)."),
        click.option("--train-args", default="", help="Extra `chat-tui train` arguments for every run, e.g. '--steps 20'."),
        click.option("--args-for", "algo_args", multiple=True, metavar="ALGO=ARGS",
                     help="Extra arguments for one algorithm's runs, e.g. 'ppo=--kl-beta 0.1' (repeatable)."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), function)


def make_config(taste: str, out_dir, model, k, train_prompts, held_out_prompts, seed, split_seed, max_new_tokens,
                threads, prompts_per_batch, max_batch_rows, prompts_file, candidates_path, algos=(), algo_list="",
                max_taught=10, train_args="", algo_args=()):
    from bench.loop.runner import LoopConfig

    listed = [a.strip() for a in algo_list.split(",") if a.strip()]
    for algo in listed:
        if algo not in ALGOS:
            raise click.BadParameter(f"{algo!r} is not one of {', '.join(ALGOS)}", param_hint="--algos")
    algos = tuple(dict.fromkeys([*algos, *listed]))
    if not 2 <= k <= 4:
        raise click.BadParameter(f"k must be between 2 and 4, got {k}", param_hint="--k")
    for value, hint in ((train_prompts, "--train-prompts"), (held_out_prompts, "--held-out-prompts")):
        if value is not None and value < 1:
            raise click.BadParameter(f"must be at least 1, got {value}", param_hint=hint)
    extra = {algo: shlex.split(train_args) for algo in ALGOS}
    for item in algo_args:
        algo, sep, args = item.partition("=")
        if not sep or algo not in ALGOS:
            raise click.BadParameter(f"{item!r} is not ALGO=ARGS with ALGO one of {', '.join(ALGOS)}", param_hint="--args-for")
        extra[algo] += shlex.split(args)
    if max_taught < 0:
        raise click.BadParameter(f"must be at least 0, got {max_taught}", param_hint="--max-taught")
    return LoopConfig(
        out_dir=out_dir, model=model, taste=taste, algos=tuple(algos) or (DEFAULT_ALGORITHM,), k=k, max_taught=max_taught,
        num_train_prompts=train_prompts, num_held_out_prompts=held_out_prompts, seed=seed, split_seed=split_seed,
        max_new_tokens=max_new_tokens, train_args=extra,
        threads=threads, prompts_per_batch=prompts_per_batch, max_batch_rows=max_batch_rows, prompts_file=prompts_file,
        candidates_path=candidates_path,
    )


def tastes_from(spec: str, param_hint: str) -> list:
    """The tastes `spec` names; a one-line usage error naming a bad one."""
    from bench.loop.tastes import TasteError, parse_tastes

    try:
        return parse_tastes(spec)
    except TasteError as exc:
        raise click.BadParameter(str(exc), param_hint=param_hint) from None


@click.group()
def cli() -> None:
    """Closed-loop benchmark: simulated feedback in, a trained model version out, measured."""


@cli.command()
@click.option("--taste", default="short", show_default=True,
              help="A registry taste (`python -m bench.loop tastes`) or package.module:attribute.")
@loop_options
@training_options
def run(taste, **options) -> None:
    """Run the whole loop for one taste and write results.json, report.md and training.png."""
    from bench.loop.runner import LoopRunner

    if len(tastes_from(taste, "--taste")) != 1:
        raise click.BadParameter(f"{taste!r}: `run` takes one taste (`matrix` runs several)", param_hint="--taste")
    config = make_config(taste, **options)
    results = LoopRunner(config).run()
    click.echo(json.dumps(results["summary"], indent=1))
    click.echo(f"report: {config.out_dir / 'report.md'}")


@cli.command()
@click.option("--tastes", "taste_spec", default="all", show_default=True,
              help="'all', or taste names (and package.module:attribute) separated by commas.")
@click.option("--resume", is_flag=True, help="Skip tastes whose results.json already exists in OUT.")
@loop_options
@training_options
def matrix(taste_spec, resume, **options) -> None:
    """Run several tastes on the same candidates and write OUT/matrix.md and OUT/matrix.json."""
    from bench.loop.matrix import run_matrix

    from bench.loop.tastes import REGISTRY

    tastes_from(taste_spec, "--tastes")  # a bad name fails here, before any work
    specs = list(REGISTRY) if taste_spec.strip() == "all" else [p.strip() for p in taste_spec.split(",") if p.strip()]
    config = make_config(specs[0], **options)
    click.echo(run_matrix(config, specs, resume))


@cli.command()
@loop_options
def candidates(**options) -> None:
    """Generate (or check) the candidate cache alone: k alternatives per training prompt and
    the base model's held-out replies, for every taste to reuse."""
    from bench.loop.runner import load_candidates

    config = make_config("short", **options)
    out_dir = config.out_dir.expanduser().resolve()
    found, cached, name, _ = load_candidates(config, out_dir, lambda text: click.echo(text, err=True))
    where = config.candidates_path or out_dir / "candidates.json"
    click.echo(f"{where}: {len(found.train)} training prompts x {config.k}, {len(found.held_out)} held-out replies "
               f"of {name} ({'reused' if cached else 'generated'}; generation took {sum(found.seconds.values()):.0f}s)")


@cli.command()
@loop_options
@click.option("--write", "write_to", type=click.Path(path_type=Path), default=None,
              help="Where to write the rates (default: bench/loop/data/base_rates.json, for the default model only).")
def baseline(write_to, **options) -> None:
    """Measure every registry taste's base rate on the base model's held-out replies (and,
    with --train-prompts N, on the training candidates too)."""
    import dataclasses

    from bench.loop.baseline import BASE_RATES_FILE, measure_base_rates, write_base_rates

    config = make_config("short", **options)
    if options["train_prompts"] is None:  # the held-out replies are enough: any cache serves them
        config = dataclasses.replace(config, num_train_prompts=0)
    report = measure_base_rates(config, lambda text: click.echo(text, err=True))
    for name, row in report["rates"].items():
        click.echo(f"{name:16s} {100 * row['rate']:5.1f}% ({row['hits']}/{row['total']})  "
                   f"candidates {100 * row['candidate_rate']:5.1f}%  {row['kind']}")
    target = write_to or (BASE_RATES_FILE if config.model is None else None)
    if target is not None:
        write_base_rates(report, target)
        click.echo(f"wrote {target}")


@cli.command()
def tastes() -> None:
    """List the registry's tastes with their kind and base rate."""
    from bench.loop.tastes import REGISTRY

    for taste in REGISTRY.values():
        rate = taste.base_rate
        click.echo(f"{taste.name:14s} {taste.kind:9s} {str(rate) if rate else 'n/a':>12s}  {taste.description}")


if __name__ == "__main__":
    sys.exit(cli())
