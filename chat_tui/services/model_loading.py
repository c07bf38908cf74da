"""Loading the chat's model in a background daemon thread.

A daemon thread rather than a Textual worker: quitting must never wait for a slow import
or load (the model store writes through a temporary folder, so nothing is left half
written). The outcome goes back through callbacks, which the screen turns into messages.
"""

from __future__ import annotations

import threading
from typing import Callable

from chat_tui.services.bootstrap import Progress, choose_model, register_loaded
from chat_tui.services.model_service import ServingModel, load_serving_model


def load_in_background(
    store: object,
    requested: str | None,
    version_id: int | None,
    device: str,
    quant: str,
    on_progress: Progress,
    on_loaded: Callable[[ServingModel], None],
    on_failed: Callable[[BaseException], None],
) -> threading.Thread:
    """Choose, load (on `device`, decoding from weights of type `quant`) and start serving
    a model off the UI thread; report through callbacks."""

    def run() -> None:
        try:
            choice = choose_model(store, requested, version_id, on_progress)
            on_progress(choice.label, "")
            serving = load_serving_model(choice.path, choice.version_id, choice.label, device, quant)
            if serving.version_id is None:
                serving.version_id = register_loaded(store, choice, str(serving.loaded.path))
        except BaseException as error:  # handed to the UI, which shows it: a failed load is never a crash
            on_failed(error)
            return
        on_loaded(serving)

    thread = threading.Thread(target=run, name="model-load", daemon=True)
    thread.start()
    return thread
