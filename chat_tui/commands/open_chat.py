"""`chat-tui` with no subcommand: open the chat app on the active (or given) model."""

from __future__ import annotations

from chat_tui import paths
from chat_tui.quant_choice import chat_quant


def open_chat(model: str | None, device: str = "cpu", quant: str | None = None) -> None:
    """Open the store, then run the app until the user quits. The model loads inside the app,
    on `device`, decoding from weights of type `quant` (None: the chat's default,
    chat_tui/quant_choice.py); a device this machine lacks, or a quantized type off the
    CPU, is a one-line error before the app opens."""
    from feedback import Store

    from chat_tui.app import ChatApp
    from chat_tui.services.app_services import AppServices

    if device != "cpu":  # the default needs no check, and so no torch import before the app opens
        from engine.devices import resolve_device

        device = str(resolve_device(device))
    quant = chat_quant(quant, device)
    paths.ensure_data_dir()
    services = AppServices(Store(paths.database_path()), requested_model=model, device=device, quant=quant)
    try:
        ChatApp(services).run()
    finally:
        services.close()
