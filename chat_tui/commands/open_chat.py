"""`chat-tui` with no subcommand: open the chat app on the active (or given) model."""

from __future__ import annotations

from chat_tui import paths


def open_chat(model: str | None) -> None:
    """Open the store, then run the app until the user quits. The model loads inside the app."""
    from feedback import Store

    from chat_tui.app import ChatApp
    from chat_tui.services.app_services import AppServices

    paths.ensure_data_dir()
    services = AppServices(Store(paths.database_path()), requested_model=model)
    try:
        ChatApp(services).run()
    finally:
        services.close()
