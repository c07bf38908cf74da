"""The `chat-tui` command line.

`chat-tui` with no arguments opens the chat app; each subcommand lives in its own module
under `chat_tui/commands/` and is imported only when used, so `chat-tui --help` is fast and
`chat-tui feedback ...` never imports torch.
"""

from __future__ import annotations

import importlib
import sys

import click

from chat_tui.errors import user_error_types

# Subcommand name -> "module:attribute" of its click command.
COMMANDS: dict[str, str] = {
    "ask": "chat_tui.commands.ask:ask",
    "models": "chat_tui.commands.models:models",
    "feedback": "chat_tui.commands.feedback:feedback",
    "pretrain": "chat_tui.commands.pretrain:pretrain",
    "train": "chat_tui.commands.train:train",
    "bench": "chat_tui.commands.bench:bench",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, invoke_without_command=True)
@click.option("--model", "model", default=None, help="Model name in the store or a path (default: the active version).")
@click.option("--device", default="cpu", show_default=True, help="Where the chat's model runs: cpu, auto (the GPU if any), cuda, cuda:N or mps.")
@click.option("--arena", nargs=2, metavar="A B", default=None,
              help="Open the chat in the arena: model versions A and B answer each prompt side by side, blind.")
@click.version_option(package_name="chat-tui")
@click.pass_context
def cli(ctx: click.Context, model: str | None, device: str, arena: tuple[str, str] | None) -> None:
    """A terminal chat assistant whose local model learns from your feedback.

    Run with no command to open the chat.
    """
    if ctx.invoked_subcommand is None:
        from chat_tui.commands.open_chat import open_chat

        open_chat(model, device, arena)


def run_command(command: click.Command) -> None:
    """Run a click command as a program: user errors become one line and exit status 1.

    Used by the console script and by the `-m` entry points that accelerate launches.
    """
    try:
        command(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except user_error_types() as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(getattr(exc, "exit_code", 1))  # e.g. 143 for a run stopped by SIGTERM
    except KeyboardInterrupt:
        sys.exit(130)


def main() -> None:
    """Console-script entry: runs the CLI and turns user errors into one-line messages."""
    run_command(cli)


if __name__ == "__main__":
    main()
