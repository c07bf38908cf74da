"""`python -m trainer ...` / `accelerate launch -m trainer ...`: the `chat-tui train` command.

A thin entry point so that accelerate can start one process per device; the command
itself (options, store, printing) lives in chat_tui/commands/train.py.
"""

from __future__ import annotations

import sys

import click


def main() -> None:
    from chat_tui.cli import user_error_types
    from chat_tui.commands.train import train

    try:
        train(standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except user_error_types() as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
