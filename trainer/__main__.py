"""`python -m trainer ...` / `accelerate launch -m trainer ...`: the `chat-tui train` command.

A thin entry point so that accelerate can start one process per device; the command
itself (options, store, printing) lives in chat_tui/commands/train.py.
"""

from __future__ import annotations


def main() -> None:
    from chat_tui.cli import run_command
    from chat_tui.commands.train import train

    run_command(train)


if __name__ == "__main__":
    main()
