"""chat-tui: the terminal app and the `chat-tui` command line.

This package is the top of the data flow: it talks to `engine` (generation), `feedback`
(the SQLite store) and `trainer` (training runs). Nothing below it imports it, except
`paths` for the data directory.
"""
