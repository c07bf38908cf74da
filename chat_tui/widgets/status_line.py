"""The status line above the footer: which model version answers, its state, its speed,
and whether the arena is on or a training run is slowing replies down.

States: "none", "loading" (with a spinner, the window is usable meanwhile), "ready",
"generating", "failed" (the reason stays visible until the next load). Pure display:
the screen sets the attributes.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class StatusLine(Static):
    # layout=True: the line wraps in a narrow window, so a change of text can change its height.
    model_label: reactive[str] = reactive("", layout=True)
    state: reactive[str] = reactive("loading", layout=True)
    detail: reactive[str] = reactive("", layout=True)  # a failure reason, or what is loading
    tokens_per_s: reactive[float | None] = reactive(None, layout=True)
    num_tokens: reactive[int] = reactive(0)
    training: reactive[str] = reactive("", layout=True)  # e.g. "ppo 7/16" while a training run goes on
    arena: reactive[str] = reactive("", layout=True)  # e.g. "3 chosen" while the arena is on
    _frame: reactive[int] = reactive(0)

    def on_mount(self) -> None:
        self._timer = self.set_interval(0.1, self._tick, pause=self.state not in ("loading", "generating"))

    def _tick(self) -> None:
        self._frame = (self._frame + 1) % len(SPINNER)

    def watch_state(self, state: str) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            if state in ("loading", "generating"):
                timer.resume()
            else:
                timer.pause()
        self.set_class(state == "failed", "failed")

    def render(self) -> Text:
        text = self._model_state()
        self._append_modes(text)
        return text

    def _model_state(self) -> Text:
        spinner = SPINNER[self._frame]
        text = Text()
        if self.state == "loading":
            text.append(f"{spinner} Loading {self.model_label or 'model'}… ", style="bold")
            text.append(self.detail or "you can start writing meanwhile", style="dim")
            return text
        if self.state == "none":
            text.append("○ No model loaded. ", style="bold")
            text.append("F4 picks a model version.", style="dim")
            return text
        if self.state == "failed":
            text.append("✗ Model not available: ", style="bold")
            text.append(self.detail)
            return text
        text.append("● ", style="green")
        text.append(self.model_label, style="bold")
        if self.state == "generating":
            text.append(f"  {spinner} generating", style="italic")
        if self.tokens_per_s is not None:
            text.append(f"  {self.tokens_per_s:.1f} tok/s", style="dim")
            text.append(f" ({self.num_tokens} tokens)", style="dim")
        return text

    def _append_modes(self, text: Text) -> None:
        if self.arena:
            text.append(f"  ⚔ arena, blind: {self.arena}", style="bold magenta")
        if self.training:
            text.append(f"  ⚙ training {self.training}: replies are slower meanwhile", style="yellow")
