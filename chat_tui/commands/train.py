"""`chat-tui train`: turn the feedback in the store into a new model version.

Resolves the base version (the active one unless --base is given; on a fresh install the
default model), opens the feedback store and hands over to `trainer.pipeline.run_training`,
then prints the evaluation against the parent version and sample replies side by side.
Runs data-parallel under `accelerate launch -m chat_tui train ...` with the same options.
Every training setting has a default and a help string in `trainer.settings.TrainSettings`;
the common ones have their own flags, and any of them can be set with `--set NAME=VALUE`
(`--list-settings` prints them all).
"""

from __future__ import annotations

import click

from trainer.algorithms import ALGORITHMS, DEFAULT_ALGORITHM
from trainer.settings import TrainSettings, describe_settings  # no torch: --help's defaults come from here


def _print_outcome(outcome) -> None:
    from trainer.card import version_card

    metrics = outcome.metrics
    click.echo("")
    for line in version_card(metrics):
        click.echo(line)
    if outcome.phase_seconds:
        click.echo("phase times: " + ", ".join(f"{k} {v:.1f}s" for k, v in outcome.phase_seconds.items()))
    for sample in outcome.samples:
        click.echo(f"\nprompt: {sample['prompt']}\n  parent: {sample['parent']}\n  new:    {sample['new']}")
    if outcome.version_name:
        state = "and activated it" if outcome.activated else "(not activated; --activate to use it anyway)"
        click.echo(f"\nsaved model version {outcome.version_name!r} at {outcome.version_path} {state}")


def stop_on_signals() -> None:
    """SIGTERM (the app's cancel, `kill`) stops the run as cancelled and resumable, and a
    process started by `accelerate launch` also gets SIGTERM when the launcher dies, so a
    killed launcher leaves no process training on alone."""
    import os
    import signal

    from trainer.errors import TrainingCancelled

    def cancel(signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough; finish recording it
        raise TrainingCancelled("training was cancelled (SIGTERM); run the same command again to resume it")

    signal.signal(signal.SIGTERM, cancel)
    if "LOCAL_RANK" in os.environ and hasattr(os, "getppid"):
        _die_with_parent(signal.SIGTERM)


def _die_with_parent(signum: int) -> None:
    """Linux: ask the kernel to send `signum` when the parent (the launcher) exits."""
    import ctypes
    import os

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signum, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before the request was made
        os.kill(os.getpid(), signum)


def checked_base_path(base: str) -> str:
    """--base given as a model-store name or a path: the absolute path of a model that
    loads (judged from its config and headers), or a one-line ModelLoadError."""
    from chat_tui.paths import models_dir
    from engine.loading import ModelStore
    from engine.loading.model_store import check_model

    return str(check_model(ModelStore(models_dir()).resolve(base)))


def parse_overrides(items: tuple[str, ...]) -> dict[str, str]:
    """NAME=VALUE items as a dict; a click usage error for an item without '='."""
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--set")
        values[name.strip().replace("-", "_")] = value
    return values


@click.command(name="train")
@click.option("--algo", type=click.Choice(list(ALGORITHMS)), default=DEFAULT_ALGORITHM, show_default=True,
              help="; ".join(f"{a.name}: {a.summary}" for a in ALGORITHMS.values()) + ".")
@click.option("--lora/--full", "use_lora", default=True, show_default=True,
              help="Train LoRA adapters (reference = adapters off) or the weights themselves.")
@click.option("--top-layers", type=int, default=None,
              help="Train only the top N decoder layers (default: 4 on CPU, all on GPU; 0 = all).")
@click.option("--steps", type=int, default=None, help="PPO steps or DPO optimizer steps (default: small on CPU).")
@click.option("--device", default="auto", show_default=True, help="auto (the GPU if any), cpu, cuda, cuda:N or mps.")
@click.option("--base", "base_name", default=None, help="Model version to start from (default: the active one).")
@click.option("--seed", default=0, show_default=True, help="Random seed.")
@click.option("--grad-accum", default=1, show_default=True, help="Gradient accumulation steps.")
@click.option("--kl-beta", default=TrainSettings.kl_beta, show_default=True, help="PPO's per-token KL penalty coefficient.")
@click.option("--adaptive-kl", is_flag=True, help="Adapt the KL coefficient towards a target KL.")
@click.option("--max-reply-tokens", default=TrainSettings.max_reply_tokens, show_default=True,
              help="Longest reply trained on or generated; longer replies are cut.")
@click.option("--threads", type=int, default=None,
              help="CPU threads for this run (default: torch's; use fewer when other programs are busy).")
@click.option("--dry-run", is_flag=True, help="Only print what data would be used and the plan.")
@click.option("--activate", is_flag=True, help="Activate the new version even if evaluation did not improve.")
@click.option("--progress-json", is_flag=True,
              help="Print progress as JSON lines on stdout (for programs, such as the chat, that follow the run).")
@click.option("--set", "overrides", multiple=True, metavar="NAME=VALUE",
              help="Any training setting (repeatable); --list-settings shows them with their defaults.")
@click.option("--list-settings", is_flag=True, help="Print every training setting with its default and help, then exit.")
def train(algo, use_lora, top_layers, steps, device, base_name, seed, grad_accum, kl_beta, adaptive_kl,
          max_reply_tokens, threads, dry_run, activate, progress_json, overrides, list_settings) -> None:
    """Train a new model version from your ratings, rankings and demonstrations.

    Runs SFT on demonstrations (when there are any), trains a reward model and runs PPO,
    or runs DPO; evaluates the result against its parent on held-out prompts; saves it as
    a new version (the one in use is never overwritten). Interrupted runs resume when the
    same command is run again.
    """
    if list_settings:
        for name, default, text in describe_settings():
            click.echo(f"{name:30s} {default:10s} {text}")
        return
    stop_on_signals()
    from accelerate import PartialState

    from chat_tui.paths import data_dir, database_path, ensure_data_dir, models_dir
    from chat_tui.services.bootstrap import choose_model, register_loaded
    from feedback import Store
    from trainer.pipeline import BaseVersion, run_training

    if threads is not None:
        import torch

        from trainer.errors import TrainerError

        if threads < 1:
            raise TrainerError(f"--threads must be at least 1, got {threads}")
        # CPU threads that wait on each other while another program holds a core slow every
        # matmul down many times over (measured 20x on 2 busy cores); fewer threads avoid it.
        torch.set_num_threads(threads)
    settings = TrainSettings(
        algo=algo, use_lora=use_lora, top_layers=top_layers, steps=steps, device=device, seed=seed,
        gradient_accumulation_steps=grad_accum, kl_beta=kl_beta, adaptive_kl=adaptive_kl,
        max_reply_tokens=max_reply_tokens, activate=activate,
    ).with_values(parse_overrides(overrides))
    settings.validate()  # before the default model is imported or the database created
    from trainer.runtime import check_launch

    check_launch()
    if base_name is not None and not database_path().is_file():
        checked_base_path(base_name)  # no versions yet, so --base names a model on disk: check it before creating any
    ensure_data_dir()
    store = Store(database_path())
    choice = choose_model(store, base_name, None, lambda label, text: click.echo(f"{label}: {text}", err=True))
    version_id, base_path = choice.version_id, choice.path
    if version_id is None:  # --base names no version: a model on disk, checked before its row is added
        base_path = checked_base_path(choice.path)
        version_id = register_loaded(store, choice, base_path)
    base = BaseVersion(base_path, version_id, choice.label)
    progress = echo = None
    if progress_json:
        from trainer.progress import JsonProgress

        progress = JsonProgress(enabled=PartialState().is_main_process)
        echo = progress.message
    outcome = run_training(settings, store, base, data_dir(), models_dir(), dry_run=dry_run, progress=progress,
                           echo=echo or click.echo)
    if not dry_run and PartialState().is_main_process:
        if progress_json:
            progress.emit({"event": "done", "run_id": outcome.run_id, "version": outcome.version_name,
                           "version_id": outcome.version_id, "activated": outcome.activated, "improved": outcome.improved})
        else:
            _print_outcome(outcome)


def main() -> None:
    """`python -m chat_tui.commands.train ...`: the command with the CLI's one-line errors."""
    from chat_tui.cli import run_command

    run_command(train)


if __name__ == "__main__":
    main()
