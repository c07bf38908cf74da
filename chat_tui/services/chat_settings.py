"""The chat's sampling settings: what they are, their bounds, and how they become
`SamplingParams`.

Pure data: reading and writing them to the feedback store is `SettingsStore`'s job
(chat_tui/services/settings_store.py); the form that edits them is the settings screen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from chat_tui.errors import UserError
from engine.sampling import SamplingParams

MIN_COMPARE = 2
MAX_COMPARE = 4
_RECOMMENDED = SamplingParams.chat_defaults()  # the defaults below are read from here only


@dataclass(frozen=True)
class ChatSettings:
    temperature: float = _RECOMMENDED.temperature
    top_p: float = _RECOMMENDED.top_p
    max_new_tokens: int = _RECOMMENDED.max_new_tokens
    repetition_penalty: float = _RECOMMENDED.repetition_penalty
    compare_k: int = 2  # alternatives generated side by side in compare mode
    seed: int | None = None  # None: a fresh random seed per reply; a number makes replies reproducible

    def validate(self) -> "ChatSettings":
        """Return self, or raise UserError naming the first value out of range."""
        if not 0 <= self.temperature <= 5:
            raise UserError(f"temperature must be between 0 and 5, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top-p must be in (0, 1], got {self.top_p}")
        if not 1 <= self.max_new_tokens <= 32768:
            raise UserError(f"max tokens must be between 1 and 32768, got {self.max_new_tokens}")
        if not 0 < self.repetition_penalty <= 3:
            raise UserError(f"repetition penalty must be in (0, 3], got {self.repetition_penalty}")
        if not MIN_COMPARE <= self.compare_k <= MAX_COMPARE:
            raise UserError(f"compare k must be between {MIN_COMPARE} and {MAX_COMPARE}, got {self.compare_k}")
        if self.seed is not None and self.seed < 0:
            raise UserError(f"seed must be a whole number >= 0 or empty, got {self.seed}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ChatSettings":
        """Settings from a stored dict; unknown keys are ignored, missing ones take defaults."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, value in raw.items():
            field = known.get(name)
            if field is None:
                continue
            if name == "seed" and value in (None, ""):
                values[name] = None
                continue
            kind = float if field.type in ("float", float) else int
            try:
                values[name] = kind(value)
            except (TypeError, ValueError):
                raise UserError(f"{name} must be a number, got {value!r}") from None
        return cls(**values).validate()

    @classmethod
    def parse(cls, text_values: dict[str, str]) -> "ChatSettings":
        """Settings from the form's text fields, with a clear error for a non-number."""
        return cls.from_dict({name: text.strip() for name, text in text_values.items()})

    def sampling_params(self, stop_token_ids: list[int] | None = None, n: int = 1) -> SamplingParams:
        """The engine's SamplingParams for these settings."""
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            repetition_penalty=self.repetition_penalty,
            stop_token_ids=list(stop_token_ids or []),
            n=n,
            seed=self.seed,
        )
