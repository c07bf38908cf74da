"""`chat-tui` with no subcommand: open the chat app on the active (or given) model, or in
the arena on two versions (`--arena A B`)."""

from __future__ import annotations

from chat_tui import paths
from chat_tui.quant_choice import chat_quant


def open_chat(model: str | None, device: str = "cpu", quant: str | None = None,
              arena: tuple[str, str] | None = None) -> None:
    """Open the store, then run the app until the user quits. The model loads inside the app,
    on `device`, decoding from weights of type `quant` (None: the chat's default,
    chat_tui/quant_choice.py); a device this machine lacks, a quantized type off the CPU,
    or an arena naming versions that are not there, is a one-line error before the app
    opens."""
    from feedback import Store

    from chat_tui.app import ChatApp
    from chat_tui.services.app_services import AppServices
    from chat_tui.services.arena import check_pair

    if device != "cpu":  # the default needs no check, and so no torch import before the app opens
        from engine.devices import resolve_device

        device = str(resolve_device(device))
    quant = chat_quant(quant, device)
    paths.ensure_data_dir()
    store = Store(paths.database_path())
    if arena is not None:
        try:
            check_pair(store, *arena)
        except BaseException:
            store.close()
            raise
    services = AppServices(store, requested_model=model, device=device, quant=quant, arena_request=arena)
    try:
        ChatApp(services).run()
    finally:
        services.close()
