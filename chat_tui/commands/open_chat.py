"""`chat-tui` with no subcommand: open the chat app on the active (or given) model, or in
the arena on two versions (`--arena A B`)."""

from __future__ import annotations

from chat_tui import paths


def open_chat(model: str | None, device: str = "cpu", arena: tuple[str, str] | None = None) -> None:
    """Open the store, then run the app until the user quits. The model loads inside the app,
    on `device`; a device this machine lacks, or an arena naming versions that are not
    there, is a one-line error before the app opens."""
    from feedback import Store

    from chat_tui.app import ChatApp
    from chat_tui.services.app_services import AppServices
    from chat_tui.services.arena import check_pair

    if device != "cpu":  # the default needs no check, and so no torch import before the app opens
        from engine.devices import resolve_device

        device = str(resolve_device(device))
    paths.ensure_data_dir()
    store = Store(paths.database_path())
    if arena is not None:
        try:
            check_pair(store, *arena)
        except BaseException:
            store.close()
            raise
    services = AppServices(store, requested_model=model, device=device, arena_request=arena)
    try:
        ChatApp(services).run()
    finally:
        services.close()
