"""The arena's two model versions: loading them side by side, and whose turn is which.

Arena mode answers each prompt with two versions at once, shown blind. `ArenaService`
holds the pair: the chat's own model when it is one of them (no second copy), the other
loaded beside it with every weight the two share held once (two versions of one base
differ in a few layers; see engine.loading.delta.share_unchanged_weights). Each side has
its own engine loop, so the two replies stream together. `sides()` shuffles which
version is on the left for each prompt, so position says nothing.

Loading runs in a daemon thread under the chat's load lock (one model is built at a time
in a process) and reports through a callback, as ModelService does. What a choice writes
is ChatSession's and the store's; the screen is screens/arena_screen.py.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any, Callable

from chat_tui.errors import UserError
from chat_tui.services.model_service import ModelService, ServingModel, load_serving_model


ARENA_BATCH = 2  # sequences an arena side's engine holds at once (it answers one prompt at a time)


@dataclass(frozen=True)
class ArenaSide:
    version_id: int
    name: str
    serving: ServingModel


ArenaLoaded = Callable[["BaseException | None"], None]


def check_pair(store: Any, first: str | int, second: str | int) -> tuple[Any, Any]:
    """The two model versions to compare, or a UserError naming what is wrong."""
    versions = []
    for name in (first, second):
        version = store.get_model_version(int(name) if isinstance(name, str) and name.isdigit() else name)
        if version.is_removed:
            raise UserError(f"model version {version.name!r} was removed; the arena needs two versions with files")
        versions.append(version)
    if versions[0].id == versions[1].id:
        raise UserError(f"the arena compares two different versions, not {versions[0].name!r} with itself")
    return versions[0], versions[1]


class ArenaService:
    def __init__(self, model: ModelService, quant: str = "none") -> None:
        self.model = model  # the chat's: its loaded version is reused, its load lock shared
        self.quant = quant  # the weights each side decodes from, as the chat's
        self.sides_loaded: list[ArenaSide] = []
        self.pair: tuple[int, int] | None = None  # version ids, as chosen (not as shown)
        self.names: dict[int, str] = {}
        self.is_loading = False
        self.from_run: int | None = None  # the training run whose new version is being tried
        self.num_choices = 0  # choices made since the arena was opened
        self._owned: list[ServingModel] = []  # engines it answers with: its own, and the chat's lent to it
        self._random = random.Random()

    @property
    def is_on(self) -> bool:
        return self.pair is not None

    @property
    def is_ready(self) -> bool:
        return self.is_on and len(self.sides_loaded) == 2

    def start(self, store: Any, first: Any, second: Any, device: str, on_loaded: ArenaLoaded,
              from_run: int | None = None) -> None:
        """Open the arena on two versions (records from the store) and load them in the
        background; `on_loaded(error or None)` is called from that thread."""
        self.stop()
        self.pair = (first.id, second.id)
        self.names = {first.id: first.name, second.id: second.name}
        self.from_run = from_run
        self.num_choices = 0
        self.is_loading = True
        pair = self.pair

        def run() -> None:
            error: BaseException | None = None
            loaded: list[ArenaSide] = []
            owned: list[ServingModel] = []
            try:
                with self.model.load_lock:
                    chat = self.model.serving
                    for version in (first, second):
                        if chat is not None and chat.version_id == version.id:
                            serving = chat
                            self.model.lent.add(id(chat))
                            owned.append(chat)  # to stop later, if the chat has moved on by then
                        else:
                            share = loaded[0].serving if loaded else chat
                            # One reply at a time per side: a small KV cache.
                            serving = load_serving_model(version.path, version.id, version.name, device, self.quant,
                                                         share_with=share, max_batch_size=ARENA_BATCH)
                            owned.append(serving)
                        loaded.append(ArenaSide(version.id, version.name, serving))
            except BaseException as caught:  # handed to the UI: a failed load is never a crash
                error = caught
            if self.pair != pair or error is not None:  # stopped or superseded meanwhile, or failed
                for serving in owned:
                    self.model.lent.discard(id(serving))
                    if serving is not self.model.serving:
                        serving.front.stop()
                if self.pair == pair:
                    self.pair = None
            else:
                self.sides_loaded, self._owned = loaded, owned
            self.is_loading = False
            on_loaded(error)

        threading.Thread(target=run, name="arena-load", daemon=True).start()

    def sides(self) -> tuple[ArenaSide, ArenaSide]:
        """(left, right) for the next prompt, in a fresh random order."""
        if not self.is_ready:
            raise UserError("the arena's models are still loading")
        left, right = self.sides_loaded
        return (right, left) if self._random.random() < 0.5 else (left, right)

    def stop(self) -> None:
        """Close the arena; its engines stop, but not the chat's own model."""
        for serving in self._owned:
            self.model.lent.discard(id(serving))
            if serving is not self.model.serving:
                serving.front.stop()
        self._owned, self.sides_loaded, self.pair, self.from_run = [], [], None, None
