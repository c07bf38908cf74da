"""`python -m chat_tui ...`: the same CLI as the `chat-tui` command, for an environment
where the package is on the path but not installed (its console script is missing)."""

from chat_tui.cli import main

main()
