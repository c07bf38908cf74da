"""`chat-tui` with no subcommand: open the chat app on the active (or given) model."""

from __future__ import annotations

from chat_tui import paths


def open_chat(model: str | None, device: str = "cpu") -> None:
    """Open the store, then run the app until the user quits. The model loads inside the app,
    on `device`; a device this machine lacks is a one-line error before the app opens."""
    from feedback import Store

    from chat_tui.app import ChatApp
    from chat_tui.services.app_services import AppServices

    if device != "cpu":  # the default needs no check, and so no torch import before the app opens
        from engine.devices import resolve_device

        device = str(resolve_device(device))
    paths.ensure_data_dir()
    services = AppServices(Store(paths.database_path()), requested_model=model, device=device)
    try:
        ChatApp(services).run()
    finally:
        services.close()
