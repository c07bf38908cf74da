"""`python -m bench.loop run|baseline`: the closed-loop benchmark's command line."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

DEFAULT_OUT = Path("bench/out/loop")


@click.group()
def cli() -> None:
    """Closed-loop benchmark: simulated feedback in, a trained model version out, measured."""


@cli.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Output directory (its home/ data directory is wiped at the start).")
@click.option("--model", default=None, help="Base model directory or .gguf (default: the default model, imported).")
@click.option("--algo", "algos", multiple=True, type=click.Choice(["ppo", "dpo"]), help="Repeatable (default: ppo and dpo).")
@click.option("--k", default=4, show_default=True, help="Alternatives per prompt (2-4, as in the chat's compare mode).")
@click.option("--max-words", default=50, show_default=True, help="The preference: replies of at most this many words.")
@click.option("--train-prompts", type=int, default=None, help="Rank only the first N training prompts (default: all).")
@click.option("--held-out-prompts", type=int, default=None, help="Evaluate on the first N held-out prompts (default: all).")
@click.option("--seed", default=0, show_default=True, help="Seed for sampling and training.")
@click.option("--split-seed", default=0, show_default=True, help="Seed of the train / held-out split.")
@click.option("--max-new-tokens", type=int, default=None, help="Longest reply (default: the chat's 256).")
@click.option("--ppo-args", default="", help="Extra `chat-tui train` arguments for the PPO run, e.g. '--steps 20'.")
@click.option("--dpo-args", default="", help="Extra `chat-tui train` arguments for the DPO run.")
@click.option("--threads", type=int, default=None, help="Torch threads here and OMP_NUM_THREADS for the trainer.")
@click.option("--prompts-per-batch", default=32, show_default=True, help="Prompts handed to the engine together.")
@click.option("--max-batch-rows", default=32, show_default=True, help="Sequences the engine decodes at once.")
@click.option("--prompts-file", type=click.Path(path_type=Path, exists=True), default=None, help="Another prompt set (JSONL).")
def run(out_dir, model, algos, k, max_words, train_prompts, held_out_prompts, seed, split_seed, max_new_tokens,
        ppo_args, dpo_args, threads, prompts_per_batch, max_batch_rows, prompts_file) -> None:
    """Run the whole loop once and write results.json, report.md and training.png."""
    from bench.loop.runner import LoopConfig, LoopRunner

    if not 2 <= k <= 4:
        raise click.BadParameter(f"k must be between 2 and 4, got {k}", param_hint="--k")
    config = LoopConfig(
        out_dir=out_dir, model=model, algos=tuple(algos) or ("ppo", "dpo"), k=k, max_words=max_words,
        num_train_prompts=train_prompts, num_held_out_prompts=held_out_prompts, seed=seed, split_seed=split_seed,
        max_new_tokens=max_new_tokens, train_args={"ppo": shlex.split(ppo_args), "dpo": shlex.split(dpo_args)},
        threads=threads, prompts_per_batch=prompts_per_batch, max_batch_rows=max_batch_rows, prompts_file=prompts_file,
    )
    results = LoopRunner(config).run()
    click.echo(json.dumps(results["summary"], indent=1))
    click.echo(f"report: {out_dir / 'report.md'}")


@cli.command()
@click.option("--model", default=None, help="Model directory or .gguf (default: the default model).")
@click.option("--prompts", "num_prompts", default=40, show_default=True, help="How many prompts (a seeded sample).")
@click.option("--seed", default=1, show_default=True, help="Seed of the sample and of the sampling.")
@click.option("--threads", type=int, default=None, help="Torch threads.")
@click.option("--max-new-tokens", type=int, default=None, help="Longest reply (default: the chat's 256).")
@click.option("--out", "out_file", type=click.Path(path_type=Path), default=None, help="Write the replies and rates as JSON.")
def baseline(model, num_prompts, seed, threads, max_new_tokens, out_file) -> None:
    """Measure how often the model already meets each candidate preference (one reply per prompt)."""
    from bench.loop.baseline import measure_candidates

    report = measure_candidates(model, num_prompts, seed, threads, max_new_tokens)
    for name, rate in report["rates"].items():
        click.echo(f"{name:40s} {rate}")
    if out_file:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str))


if __name__ == "__main__":
    sys.exit(cli())
