"""The `chat-tui` command line.

`chat-tui` with no arguments opens the chat app; each subcommand lives in its own module
under `chat_tui/commands/` and is imported only when used, so `chat-tui --help` is fast and
`chat-tui feedback ...` never imports torch.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from chat_tui.errors import user_error_types
from chat_tui.quant_choice import CHAT_QUANT, QUANT_TYPES

# Subcommand name -> "module:attribute" of its click command.
COMMANDS: dict[str, str] = {
    "ask": "chat_tui.commands.ask:ask",
    "models": "chat_tui.commands.models:models",
    "feedback": "chat_tui.commands.feedback:feedback",
    "pretrain": "chat_tui.commands.pretrain:pretrain",
    "train": "chat_tui.commands.train:train",
    "bench": "chat_tui.commands.bench:bench",
    "clean": "chat_tui.commands.clean:clean",
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
@click.option("--quant", type=click.Choice(QUANT_TYPES), default=None,
              help=f"Weights the chat decodes from on the CPU: 8-bit (q8_0), 4-bit (q4_0) blocks, or none (fp32). "
                   f"Default: {CHAT_QUANT} on the CPU, none elsewhere.")
@click.option("--arena", nargs=2, metavar="A B", default=None,
              help="Open the chat in the arena: model versions A and B answer each prompt side by side, blind.")
@click.version_option(package_name="chat-tui")
@click.pass_context
def cli(ctx: click.Context, model: str | None, device: str, quant: str | None, arena: tuple[str, str] | None) -> None:
    """A terminal chat assistant whose local model learns from your feedback.

    Run with no command to open the chat.
    """
    if ctx.invoked_subcommand is None:
        from chat_tui.commands.open_chat import open_chat

        open_chat(model, device, quant, arena)


def run_command(command: click.Command) -> None:
    """Run a click command as a program: user errors become one line and exit status 1.

    A usage mistake (an unknown option, a value of the wrong type) is one line too, with
    the command's --help to turn to; so is what the system refuses (a full disk, a
    read-only folder: `describe_os_error`) and running out of memory. Files created on
    the way are private to the user (`paths.private_files`). Used by the console script
    and by the `-m` entry points that accelerate launches.
    """
    from chat_tui.errors import describe_os_error, one_line
    from chat_tui.paths import private_files

    try:
        with private_files():
            command(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(one_line(exc.format_message()) + hint, exc.exit_code)
    except click.ClickException as exc:
        _fail(one_line(exc.format_message()), exc.exit_code)
    except user_error_types() as exc:
        _fail(one_line(str(exc)), getattr(exc, "exit_code", 1))  # e.g. 143 for a run stopped by SIGTERM
    except BrokenPipeError:  # the reader of our output went away (`| head`): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as exc:
        _fail(describe_os_error(exc))
    except MemoryError:
        _fail("out of memory: the input is too large for the memory this process may use")
    except KeyboardInterrupt:
        sys.exit(130)


def _fail(message: str, status: int = 1) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(status)


def main() -> None:
    """Console-script entry: runs the CLI and turns user errors into one-line messages."""
    run_command(cli)


if __name__ == "__main__":
    main()
