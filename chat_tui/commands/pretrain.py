"""`chat-tui pretrain`: train a tokenizer and a small PaLM model on your own text.

Parses options, shows progress, and records the finished model as a version in the
feedback store; the work itself is trainer.pretrain.pretrain.
"""

from __future__ import annotations

from pathlib import Path

import click

from chat_tui.errors import UserError
from trainer.pretrain import SIZES, PretrainEvent, PretrainSettings, pretrain as run_pretraining


class _EventPrinter:
    """Turns pretraining events into a progress bar plus evaluation and sample lines."""

    def __init__(self) -> None:
        from trainer.progress import ConsoleProgress

        self.console = ConsoleProgress()
        self.bar = None
        self.last_loss: float | None = None
        self.last_held_out: float | None = None

    def __call__(self, event: PretrainEvent) -> None:
        if event.kind == "start":
            self.console.message(
                f"model: {event.text}; unigram baseline {event.unigram_baseline:.3f} nats/token"
            )
            self.bar = self.console.phase("pretrain", event.total_steps)
            if event.step:
                self.bar.advance(event.step)
        elif event.kind == "step" and self.bar is not None:
            self.last_loss = event.loss
            metrics = {"loss": event.loss}
            if self.last_held_out is not None:
                metrics["held_out"] = self.last_held_out
            self.bar.advance(1, metrics)
        elif event.kind == "eval":
            self.last_held_out = event.held_out_loss
            self.console.message(
                f"\nstep {event.step}: held-out loss {event.held_out_loss:.3f} "
                f"(unigram baseline {event.unigram_baseline:.3f})"
            )
        elif event.kind == "sample":
            self.console.message(f"sample at step {event.step}: {event.text!r}")
        elif event.kind == "checkpoint":
            self.console.message(f"checkpoint saved at step {event.step}")
        elif event.kind == "done" and self.bar is not None:
            self.bar.close()

    def log(self, text: str) -> None:
        self.console.message(text)


def refuse_taken_name(name: str, database: Path) -> None:
    """A UserError when the feedback store already has a model version called `name`:
    the finished model could not be registered under it."""
    if not database.is_file():
        return
    from feedback import Store
    from feedback.errors import NotFoundError

    with Store(database) as store:
        try:
            version = store.get_model_version(name)
        except NotFoundError:
            return
    raise UserError(f"--out {name!r} is already the name of model version {version.id} ({version.path}); choose another")


@click.command(name="pretrain")
@click.option("--data", "data", required=True, type=click.Path(), help="A text file, or a directory of .txt/.md files.")
@click.option("--out", "out", required=True, help="Name of the new model in the store.")
@click.option("--vocab-size", default=4096, show_default=True, help="Sentencepiece vocabulary size.")
@click.option("--size", type=click.Choice(list(SIZES)), default="tiny", show_default=True, help="Model size.")
@click.option("--steps", default=1000, show_default=True, help="Optimizer steps (a resumed run may raise it).")
@click.option(
    "--model-type", type=click.Choice(["bpe", "unigram"]), default="bpe", show_default=True,
    help="Sentencepiece algorithm.",
)
@click.option("--resume", is_flag=True, help="Continue the interrupted run named by --out from its last checkpoint.")
@click.option("--device", default="auto", show_default=True, help="auto (the GPU if any), cpu, cuda, cuda:N or mps.")
@click.option("--seed", default=0, show_default=True, help="Seed for initialisation and batch order.")
@click.option("--activate", is_flag=True, help="Make the new model the one the chat uses.")
def pretrain(
    data: str,
    out: str,
    vocab_size: int,
    size: str,
    steps: int,
    model_type: str,
    resume: bool,
    device: str,
    seed: int,
    activate: bool,
) -> None:
    """Train a sentencepiece tokenizer and a small PaLM model from scratch on your text.

    The result is an ordinary model in the store, with a simple chat template; chat with
    it with `chat-tui --model NAME`. Checkpoints are saved as it goes: after an
    interruption, run the same command with --resume. On several GPUs, run it under
    `accelerate launch -m chat_tui.commands.pretrain --data ... --out ...`.
    """
    from feedback import Store

    from chat_tui.paths import data_dir, database_path, ensure_data_dir, models_dir

    refuse_taken_name(out, database_path())  # before any training, not after it
    ensure_data_dir()
    settings = PretrainSettings(
        data=data, out=out, vocab_size=vocab_size, size=size, steps=steps, model_type=model_type,
        seed=seed, device=device,
    )
    printer = _EventPrinter()
    result = run_pretraining(settings, data_dir(), models_dir(), resume=resume, on_event=printer, log=printer.log)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    metrics = {
        "held_out_loss": result.held_out_loss,
        "unigram_baseline": result.unigram_baseline,
        "steps": result.steps,
        "num_parameters": result.num_parameters,
        "architecture": "palm",
    }
    version = Store(database_path()).register_model_version(
        out, str(result.model_dir), source="train", metrics=metrics, activate=activate
    )
    click.echo(
        f"held-out loss {result.held_out_loss:.3f} nats/token (unigram baseline "
        f"{result.unigram_baseline:.3f}); {result.steps} steps, {result.tokens_per_second:,.0f} tokens/s"
    )
    click.echo(f"saved model version {version.name!r} at {result.model_dir}")


def main() -> None:
    """`accelerate launch -m chat_tui.commands.pretrain ...`: one process per device, with
    the CLI's one-line errors."""
    from chat_tui.cli import run_command

    run_command(pretrain)


if __name__ == "__main__":
    main()
