"""The whole loop, phase by phase: set up a data directory, collect feedback as the
simulated user, run `chat-tui train` (PPO, DPO) as subprocesses, and measure every
version on the held-out prompts.

The benchmark owns its data directory (`<out>/home`, passed to the trainer as
CHAT_TUI_HOME), so nothing of the user's own chat data is read or written. Results go to
`<out>/results.json`, `<out>/report.md` and `<out>/training.png` (bench/loop/report.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from bench.loop import measures
from bench.loop.phases import PhaseRecord, measured, run_measured
from bench.loop.evaluation import VersionEval, evaluate_version
from bench.loop.preference import Preference
from bench.loop.prompt_set import BenchPrompt, load_prompts, split_prompts

Echo = Callable[[str], None]
# trainer/progress.py's console lines, as written to a log (not a terminal).
PROGRESS_LINE = re.compile(r"^(?P<phase>\S+)\s+\[[#.]+\]\s+(?P<step>\d+)/(?P<total>\d+)\s+(?:eta\s+)?[\d:]+(?P<metrics>.*)$")
METRIC = re.compile(r"([A-Za-z_][\w/.-]*)\s+(-?[\d.]+(?:e[-+]?\d+)?|nan|inf|-inf)")


@dataclass
class LoopConfig:
    out_dir: Path
    model: str | None = None  # a model directory or .gguf; None: the default model, imported
    algos: tuple[str, ...] = ("ppo", "dpo")
    k: int = 4  # alternatives per prompt (the chat's compare mode allows 2-4)
    max_words: int = 50
    num_train_prompts: int | None = None  # None: all of the split's training prompts
    num_held_out_prompts: int | None = None
    held_out_fraction: float = 0.35
    split_seed: int = 0
    seed: int = 0
    max_new_tokens: int | None = None  # None: the chat's default (256)
    prompts_per_batch: int = 32  # prompts handed to the engine together
    max_batch_rows: int = 32  # sequences the engine decodes at once
    train_args: dict[str, list[str]] = field(default_factory=dict)  # algo -> extra `chat-tui train` args
    threads: int | None = None  # torch threads here and OMP_NUM_THREADS for the trainer
    prompts_file: Path | None = None
    num_samples_shown: int = 6

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


def chat_tui_command() -> list[str]:
    """`chat-tui` as a user runs it: the console script next to this Python, else the
    same entry point the chat app uses to launch training."""
    script = Path(sys.executable).with_name("chat-tui")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from chat_tui.cli import main; main()"]


class LoopRunner:
    def __init__(self, config: LoopConfig, echo: Echo | None = None) -> None:
        self.config = config
        self.echo = echo or (lambda text: print(text, file=sys.stderr, flush=True))
        self.out_dir = Path(config.out_dir).expanduser().resolve()  # stored model paths must not depend on the cwd
        self.home = self.out_dir / "home"
        self.phases: list[PhaseRecord] = []
        self.results: dict[str, Any] = {"config": config.as_dict()}
        self.preference = Preference(config.max_words)

    # -- the pieces ---------------------------------------------------------------------

    def prepare(self) -> tuple[list[BenchPrompt], list[BenchPrompt]]:
        if self.home.exists():
            shutil.rmtree(self.home)  # a benchmark run always starts from an empty store
        self.home.mkdir(parents=True, mode=0o700)
        os.environ["CHAT_TUI_HOME"] = str(self.home)  # for chat_tui.paths in this process
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        prompts = load_prompts(self.config.prompts_file) if self.config.prompts_file else load_prompts()
        split = split_prompts(prompts, self.config.held_out_fraction, self.config.split_seed)
        train = split.train[: self.config.num_train_prompts]
        held_out = split.held_out[: self.config.num_held_out_prompts]
        self.results["prompts"] = {
            "total": len(prompts), "train": len(train), "held_out": len(held_out), "split_seed": split.seed,
            "train_ids": [p.id for p in train], "held_out_ids": [p.id for p in held_out],
        }
        self.results["preference"] = {"name": self.preference.name, "description": self.preference.describe(),
                                      "max_words": self.preference.max_words}
        return train, held_out

    def open_store(self):
        from chat_tui.paths import database_path
        from feedback import Store

        return Store(database_path())

    def register_base(self, store) -> Any:
        """The base version, as the chat would have it: the default model imported on first
        use, or the given model registered and activated."""
        if self.config.model is None:
            from chat_tui.services.bootstrap import import_default_model

            choice = import_default_model(store, lambda label, text: self.echo(f"{label}: {text}"))
            return store.get_model_version(choice.version_id)
        path = Path(self.config.model).expanduser().resolve()
        return store.register_model_version(path.name, str(path), source="import", activate=True)

    def chat_settings(self):
        from chat_tui.services.chat_settings import ChatSettings

        settings = ChatSettings()
        if self.config.max_new_tokens:
            settings = dataclasses.replace(settings, max_new_tokens=self.config.max_new_tokens)
        return settings.validate()

    def collect(self, store, base, train_prompts: list[BenchPrompt]) -> dict[str, Any]:
        from engine.loading import load_model

        from bench.loop.simulated_user import SimulatedUser

        loaded = load_model(base.path)
        user = SimulatedUser(store, loaded, base.id, self.preference, self.config.k, self.chat_settings(),
                             self.config.seed, self.config.prompts_per_batch, self.config.max_batch_rows)
        started = time.perf_counter()

        def progress(done: int, total: int) -> None:
            elapsed = time.perf_counter() - started
            self.echo(f"collect: {done}/{total} prompts ranked, {elapsed:.0f}s")

        summary = user.collect(train_prompts, progress)
        stats = store.stats()
        out = summary.as_dict()
        out["store"] = {"pairs": len(store.preference_pairs()), **_plain(stats)}
        return out

    def train(self, algo: str, base) -> dict[str, Any]:
        """`chat-tui train --algo ALGO --base BASE ...` in a subprocess, then its run from the store."""
        command = chat_tui_command() + ["train", "--algo", algo, "--base", base.name, "--seed", str(self.config.seed)]
        command += self.config.train_args.get(algo, [])
        env = dict(os.environ, CHAT_TUI_HOME=str(self.home), PYTHONUNBUFFERED="1")
        if self.config.threads:
            env["OMP_NUM_THREADS"] = str(self.config.threads)
        log_path = self.out_dir / f"train_{algo}.log"
        self.echo(f"train {algo}: {' '.join(command)}")
        code = run_measured(f"train_{algo}", command, self.phases, log_path, env, self.echo)
        store = self.open_store()
        runs = [r for r in store.list_training_runs() if r.kind == algo]
        run = runs[-1] if runs else None
        result = {"command": command, "returncode": code, "log": str(log_path)}
        if code != 0 or run is None or run.status != "succeeded" or run.result_version_id is None:
            tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            result["error"] = "\n".join(tail)
            self.echo(f"train {algo} failed (exit {code}); log tail:\n" + "\n".join(tail))
            return result
        version = store.get_model_version(run.result_version_id)
        result.update({
            "run_id": run.id, "status": run.status, "version_id": version.id, "version_name": version.name,
            "version_path": version.path, "parent_version_id": version.parent_id, "activated": version.is_active,
            "metrics": run.metrics, "config": run.config, "log_curves": parse_progress_log(log_path),
        })
        return result

    def evaluate(self, name: str, version_id: int | None, path: str, held_out: list[BenchPrompt], parent=None) -> tuple[VersionEval, Any]:
        return evaluate_version(name, version_id, path, held_out, self.preference, self.chat_settings(),
                                self.config.seed, self.config.max_batch_rows, parent)

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from bench.loop.report import write_report

        self.out_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with measured("setup", self.phases):
            train_prompts, held_out = self.prepare()
            store = self.open_store()
            base = self.register_base(store)
        self.results["base_version"] = {"id": base.id, "name": base.name, "path": base.path}
        self.echo(f"base version {base.name!r}; {len(train_prompts)} train / {len(held_out)} held-out prompts; "
                  f"preference: {self.preference.name}")

        with measured("collect", self.phases):
            self.results["collection"] = self.collect(store, base, train_prompts)
        self.echo(f"collected: {json.dumps({k: v for k, v in self.results['collection'].items() if k != 'store'})}")

        self.results["training"] = {algo: self.train(algo, base) for algo in self.config.algos}

        evaluations: dict[str, VersionEval] = {}
        with measured("eval_base", self.phases):
            evaluations["base"], parent = self.evaluate("base", base.id, base.path, held_out)
        self.echo(f"base: {evaluations['base'].rate}")
        for algo, trained in self.results["training"].items():
            if "version_path" not in trained:
                continue
            with measured(f"eval_{algo}", self.phases):
                evaluations[algo], loaded = self.evaluate(algo, trained["version_id"], trained["version_path"], held_out, parent)
            del loaded
            self.echo(f"{algo}: {evaluations[algo].rate}; KL {evaluations[algo].kl_to_parent.per_reply:.2f} nats/reply")
        self.results["evaluation"] = {name: e.as_dict() for name, e in evaluations.items()}
        self.results["held_out_replies"] = [
            {"id": p.id, "prompt": p.text, **{name: e.texts[i] for name, e in evaluations.items()}}
            for i, p in enumerate(held_out)
        ]
        self.results["phases"] = [p.as_dict() for p in self.phases]
        self.results["total_wall_s"] = time.perf_counter() - started
        self.results["summary"] = summarize(self.results, evaluations, self.phases)
        write_report(self.results, self.out_dir, self.config.num_samples_shown)
        return self.results


def summarize(results: dict[str, Any], evaluations: dict[str, VersionEval], phases: list[PhaseRecord]) -> dict[str, Any]:
    """The headline: before/after rates, their difference, the guards, the time budget."""
    base = evaluations.get("base")
    seconds = {p.name: p.wall_s for p in phases}
    out: dict[str, Any] = {"collect_s": seconds.get("collect", 0.0)}
    for algo in results["config"]["algos"]:
        after = evaluations.get(algo)
        if base is None or after is None:
            out[algo] = {"failed": True}
            continue
        gain = after.rate.value - base.rate.value
        target = 0.25 if base.rate.value >= 0.25 else base.rate.value  # +25 points, or doubling from under 25%
        ppl_ratio = after.perplexity / base.perplexity
        budget = seconds.get("collect", 0.0) + seconds.get(f"train_{algo}", 0.0)
        out[algo] = {
            "rate_before": base.rate.value, "rate_after": after.rate.value, "gain_points": 100 * gain,
            "meets_gain_target": gain >= target - 1e-9,
            "z": measures.two_proportion_z(base.rate, after.rate),
            "perplexity_ratio": ppl_ratio, "fluency_within_10pct": ppl_ratio <= 1.10,
            "kl_per_reply": after.kl_to_parent.per_reply if after.kl_to_parent else None,
            "collect_plus_train_s": budget, "within_60_min": budget <= 3600,
        }
    return out


def parse_progress_log(path: Path) -> dict[str, list[dict[str, float]]]:
    """Per-phase metric points from the trainer's console progress lines in a log
    ("dpo      [####....] 3/30 0:12  loss 0.69  margin 0.01")."""
    curves: dict[str, list[dict[str, float]]] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = PROGRESS_LINE.match(line.strip())
        if not match:
            continue
        point = {"step": float(match["step"]), "total": float(match["total"])}
        for key, value in METRIC.findall(match["metrics"]):
            point[key] = float(value)
        curves.setdefault(match["phase"], []).append(point)
    return curves


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    return value
