"""The whole loop for one taste, phase by phase: set up a data directory, get the base
model's candidate replies (generated once, then cached: bench/loop/candidates.py), give
feedback on them as the simulated user with that taste, run `chat-tui train` (PPO, DPO)
as subprocesses, and measure every new version on the held-out prompts.

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

from bench.loop.candidates import CACHE_FILE, CandidateSet
from bench.loop.evaluation import VersionEval, evaluate_version, score_replies
from bench.loop.outcome import verdict
from bench.loop.phases import PhaseRecord, measured, run_measured
from bench.loop.prompt_set import BenchPrompt, load_prompts, split_prompts
from bench.loop.tastes import DEFAULT_TASTE, get_taste
from trainer.algorithms import DEFAULT_ALGORITHM

Echo = Callable[[str], None]
# trainer/progress.py's console lines, as written to a log (not a terminal).
PROGRESS_LINE = re.compile(r"^(?P<phase>\S+)\s+\[[#.]+\]\s+(?P<step>\d+)/(?P<total>\d+)\s+(?:eta\s+)?[\d:]+(?P<metrics>.*)$")
METRIC = re.compile(r"([A-Za-z_][\w/.-]*)\s+(-?[\d.]+(?:e[-+]?\d+)?|nan|inf|-inf)")


@dataclass
class LoopConfig:
    out_dir: Path
    model: str | None = None  # a model directory or .gguf; None: the default model, imported
    taste: str = DEFAULT_TASTE  # a registry name, or "package.module:attribute" (bench/loop/tastes)
    algos: tuple[str, ...] = (DEFAULT_ALGORITHM,)
    k: int = 4  # alternatives per prompt (the chat's compare mode allows 2-4)
    max_taught: int = 10  # at most this many prompts get a reply written by the user
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
    candidates_path: Path | None = None  # None: <out_dir>/candidates.json
    base_models_dir: Path | None = None  # where the default model is imported; None: beside the candidates
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


def chat_settings(max_new_tokens: int | None = None):
    """The chat's default sampling settings, with another reply length if asked."""
    from chat_tui.services.chat_settings import ChatSettings

    settings = ChatSettings()
    if max_new_tokens:
        settings = dataclasses.replace(settings, max_new_tokens=max_new_tokens)
    return settings.validate()


def base_model(model: str | None, base_models_dir: Path) -> tuple[str, str, dict[str, Any]]:
    """(name, path, fingerprint) of the base model: the default model imported into
    `base_models_dir` once (fingerprinted by its shipped file), or the given one."""
    from bench.loop.candidates import model_fingerprint

    if model is None:
        from engine.loading import DEFAULT_MODEL_NAME, ensure_default_model
        from engine.loading.default_model import default_gguf_path

        path = ensure_default_model(base_models_dir)
        return DEFAULT_MODEL_NAME, str(path), {"default": DEFAULT_MODEL_NAME, **model_fingerprint(default_gguf_path())}
    path = Path(model).expanduser().resolve()
    return path.name, str(path), model_fingerprint(path)


def split_for(config: LoopConfig) -> tuple[list[BenchPrompt], list[BenchPrompt]]:
    """(training prompts, held-out prompts) the configuration asks for."""
    prompts = load_prompts(config.prompts_file) if config.prompts_file else load_prompts()
    split = split_prompts(prompts, config.held_out_fraction, config.split_seed)
    return split.train[: config.num_train_prompts], split.held_out[: config.num_held_out_prompts]


def base_models_dir(config: LoopConfig, out_dir: Path) -> Path:
    """Where the default model is imported: beside the candidate cache unless given."""
    if config.base_models_dir is not None:
        return Path(config.base_models_dir).resolve()
    return Path(config.candidates_path or out_dir / CACHE_FILE).resolve().parent / "base-models"


def load_candidates(config: LoopConfig, out_dir: Path, echo: Echo) -> tuple[CandidateSet, bool, str, str]:
    """(the candidates, whether cached, base name, base path) for `config`, generated if needed."""
    from bench.loop.candidates import candidates_for

    if config.threads:
        torch.set_num_threads(config.threads)
    train, held_out = split_for(config)
    cache = Path(config.candidates_path or out_dir / CACHE_FILE).resolve()
    name, path, fingerprint = base_model(config.model, base_models_dir(config, out_dir))
    candidates, cached = candidates_for(cache, path, fingerprint, chat_settings(config.max_new_tokens), config.seed,
                                        config.k, train, held_out, config.prompts_per_batch, config.max_batch_rows, echo)
    return candidates, cached, name, path


class LoopRunner:
    def __init__(self, config: LoopConfig, echo: Echo | None = None) -> None:
        self.config = config
        self.echo = echo or (lambda text: print(text, file=sys.stderr, flush=True))
        self.out_dir = Path(config.out_dir).expanduser().resolve()  # stored model paths must not depend on the cwd
        self.home = self.out_dir / "home"
        self.phases: list[PhaseRecord] = []
        self.results: dict[str, Any] = {"config": config.as_dict()}
        self.taste = get_taste(config.taste)

    # -- the pieces ---------------------------------------------------------------------

    def prepare(self) -> None:
        if self.home.exists():
            shutil.rmtree(self.home)  # a benchmark run always starts from an empty store
        self.home.mkdir(parents=True, mode=0o700)
        os.environ["CHAT_TUI_HOME"] = str(self.home)  # for chat_tui.paths in this process
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.results["taste"] = self.taste.as_dict()

    def open_store(self):
        from chat_tui.paths import database_path
        from feedback import Store

        return Store(database_path())

    def register_base(self, store, name: str, path: str) -> Any:
        """The base version, as the chat has an imported model: registered and active."""
        return store.register_model_version(name, path, source="import", activate=True)

    def collect(self, store, base, candidates: CandidateSet) -> dict[str, Any]:
        from bench.loop.simulated_user import SimulatedUser

        settings = chat_settings(self.config.max_new_tokens)
        sampling = {"temperature": settings.temperature, "top_p": settings.top_p,
                    "max_new_tokens": settings.max_new_tokens, "repetition_penalty": settings.repetition_penalty,
                    "n": self.config.k}
        user = SimulatedUser(store, base.id, self.taste, sampling, self.config.max_taught)
        summary = user.collect(candidates.train)
        out = summary.as_dict()
        out["store"] = {"pairs": len(store.preference_pairs()), **_plain(store.stats())}
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
        result = {"command": command, "returncode": code, "log": str(log_path), "wall_s": self.phases[-1].wall_s}
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

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from engine.loading import load_model

        from bench.loop.report import write_report

        self.out_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with measured("setup", self.phases):
            self.prepare()
            store = self.open_store()
        with measured("candidates", self.phases) as phase:
            candidates, cached, base_name, base_path = load_candidates(self.config, self.out_dir, self.echo)
            phase.notes.update({"cached": cached, "generated_s": candidates.seconds})
            base = self.register_base(store, base_name, base_path)
        self.results["base_version"] = {"id": base.id, "name": base.name, "path": base.path}
        self.results["prompts"] = {"train": len(candidates.train), "held_out": len(candidates.held_out),
                                   "split_seed": self.config.split_seed, "train_ids": candidates.key["train_ids"],
                                   "held_out_ids": candidates.key["held_out_ids"]}
        self.results["candidates"] = {"cached": cached, "seconds": candidates.seconds,
                                      "path": str(self.config.candidates_path or self.out_dir / CACHE_FILE)}
        self.echo(f"base version {base.name!r}; {len(candidates.train)} train / {len(candidates.held_out)} held-out "
                  f"prompts; taste {self.taste.name!r}: {self.taste.description}")

        with measured("collect", self.phases):
            self.results["collection"] = self.collect(store, base, candidates)
        self.echo(f"collected: {json.dumps({k: v for k, v in self.results['collection'].items() if k != 'store'})}")

        self.results["training"] = {algo: self.train(algo, base) for algo in self.config.algos}

        evaluations: dict[str, VersionEval] = {}
        with measured("eval_base", self.phases):
            held = candidates.held_out
            evaluations["base"] = score_replies(
                "base", base.id, [g.replies[0].text for g in held], [g.replies[0].finish_reason for g in held],
                self.taste, candidates.base_perplexity, sum(g.replies[0].num_tokens for g in held))
            parent = load_model(base.path) if any("version_path" in t for t in self.results["training"].values()) else None
        self.echo(f"base: {evaluations['base'].rate}")
        held_out = [BenchPrompt(g.prompt_id, "", g.prompt_text) for g in held]
        for algo, trained in self.results["training"].items():
            if "version_path" not in trained:
                continue
            with measured(f"eval_{algo}", self.phases):
                evaluations[algo], loaded = evaluate_version(
                    algo, trained["version_id"], trained["version_path"], held_out, self.taste,
                    chat_settings(self.config.max_new_tokens), self.config.seed, self.config.max_batch_rows, parent)
            del loaded
            self.echo(f"{algo}: {evaluations[algo].rate}; KL {evaluations[algo].kl_to_parent.per_reply:.2f} nats/reply")
        self.results["evaluation"] = {name: e.as_dict() for name, e in evaluations.items()}
        self.results["held_out_replies"] = [
            {"id": p.id, "prompt": p.text, **{name: e.texts[i] for name, e in evaluations.items()}}
            for i, p in enumerate(held_out)
        ]
        self.results["phases"] = [p.as_dict() for p in self.phases]
        self.results["total_wall_s"] = time.perf_counter() - started
        self.results["summary"] = summarize(self.results, self.taste.is_about_length)
        write_report(self.results, self.out_dir, self.config.num_samples_shown)
        return self.results


def summarize(results: dict[str, Any], is_about_length: bool) -> dict[str, Any]:
    """The headline per algorithm (bench/loop/outcome.py), and the collection's time: the
    candidates' generation (as recorded when they were made) plus storing the feedback."""
    phases = {p["name"]: p for p in results.get("phases", [])}
    generated = sum(results.get("candidates", {}).get("seconds", {}).values())
    collect_s = generated + phases.get("collect", {}).get("wall_s", 0.0)
    out: dict[str, Any] = {"collect_s": collect_s}
    evaluation = results.get("evaluation", {})
    for algo in results["config"]["algos"]:
        trained = results.get("training", {}).get(algo, {})
        if "base" not in evaluation or algo not in evaluation:
            out[algo] = {"failed": True}
            continue
        row = verdict(evaluation["base"], evaluation[algo], is_about_length, trained.get("wall_s"), trained.get("metrics"))
        row["collect_plus_train_s"] = collect_s + (trained.get("wall_s") or 0.0)
        out[algo] = row
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
