"""Why did a run move the preference rate as much (or as little) as it did?

Takes a finished benchmark run's store (its collected feedback), copies it to a scratch
data directory, and reruns training in-process with any trainer setting changed
(`--set policy_lr=5e-4 --set max_reply_tokens=256`, names as in trainer.settings.TrainSettings,
including those `chat-tui train` has no flag for), then measures the new version on the
run's held-out prompts exactly as the benchmark does. `--reward-only` trains just the
reward model and reports its held-out pair accuracy. Each result is appended to
`<out>/diagnose.jsonl`. A diagnostic for finding what the trainer needs; the benchmark
itself only ever runs `chat-tui train`.

    python -m bench.loop.diagnose --from bench/out/loop --out /tmp/diag --set algo=dpo --set policy_lr=5e-4
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import click


def parse_overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    """NAME=VALUE strings -> TrainSettings keyword arguments, each parsed to its field's type."""
    from trainer.errors import TrainerError
    from trainer.settings import TrainSettings

    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--set")
        values[key] = text
    try:
        changed = TrainSettings().with_values(values)
    except TrainerError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from None
    return {key: getattr(changed, key) for key in values}


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a (maybe WAL-mode) SQLite file through the backup API."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


@click.command()
@click.option("--from", "source", type=click.Path(path_type=Path, exists=True), required=True,
              help="A finished benchmark output directory (results.json and home/).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Scratch directory for this diagnosis.")
@click.option("--set", "overrides", multiple=True, help="A TrainSettings field, NAME=VALUE (repeatable).")
@click.option("--held-out-prompts", type=int, default=None, help="Evaluate on the first N of the run's held-out prompts.")
@click.option("--reward-only", is_flag=True, help="Train only the reward model and report its held-out accuracy.")
@click.option("--threads", type=int, default=None, help="Torch threads.")
@click.option("--label", default="", help="A name for this result line.")
def main(source: Path, out_dir: Path, overrides: tuple[str, ...], held_out_prompts: int | None, reward_only: bool,
         threads: int | None, label: str) -> None:
    """Retrain from a benchmark run's feedback with changed trainer settings and measure the result."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    results = json.loads((source / "results.json").read_text())
    home = out_dir / "home"
    copy_database(source / "home" / "feedback.db", home / "feedback.db")
    os.environ["CHAT_TUI_HOME"] = str(home)
    settings_kwargs = parse_overrides(overrides)
    started = time.perf_counter()
    record: dict[str, Any] = {"label": label, "source": str(source), "overrides": settings_kwargs}
    if reward_only:
        record.update(reward_accuracy(home, results, settings_kwargs))
    else:
        record.update(retrain_and_measure(home, results, settings_kwargs, held_out_prompts))
    record["seconds"] = time.perf_counter() - started
    with open(out_dir / "diagnose.jsonl", "a", encoding="utf-8") as log:
        log.write(json.dumps(record, default=str) + "\n")
    click.echo(json.dumps({k: v for k, v in record.items() if k not in ("texts",)}, indent=1, default=str))


def _base(store, results):
    from trainer.pipeline import BaseVersion

    version = store.get_model_version(results["base_version"]["id"])
    return version, BaseVersion(version.path, version.id, version.name)


def reward_accuracy(home: Path, results: dict, settings_kwargs: dict) -> dict[str, Any]:
    """Only the reward-model phase, on the run's feedback; its held-out pair accuracy."""
    import torch

    from engine.loading import load_model
    from feedback import Store
    from trainer.batch import pad_id_for
    from trainer.datasets import DatasetLimits, build_training_sets
    from trainer.run import make_head_model_trainable
    from trainer.reward_model import ScalarHeadModel
    from trainer.reward_training import RewardTrainingConfig, train_reward_model
    from trainer.runtime import make_accelerator, seed_everything
    from trainer.settings import TrainSettings

    store = Store(home / "feedback.db")
    version, _ = _base(store, results)
    accelerator = make_accelerator("cpu", 1)
    s = TrainSettings(**{**settings_kwargs, "algo": "ppo"}).resolved(on_gpu=False)
    seed_everything(s.seed, 0)
    loaded = load_model(version.path, dtype=torch.float32)
    num_layers = loaded.config.num_hidden_layers
    for param in loaded.model.parameters():
        param.requires_grad_(False)
    sets = build_training_sets(loaded, store.training_data(), DatasetLimits(s.max_prompt_tokens, s.max_reply_tokens),
                               s.eval_fraction, s.seed)
    model = ScalarHeadModel.from_policy(loaded.model)
    make_head_model_trainable(model, s)
    config = RewardTrainingConfig.from_settings(s, num_layers - s.top_layers if s.top_layers else 0)
    result = train_reward_model(model, sets.train_groups, sets.eval_groups, config, accelerator, pad_id_for(loaded.config))
    return {"reward_metrics": result.metrics, "data": sets.summary(), "settings": dataclasses.asdict(s)}


def retrain_and_measure(home: Path, results: dict, settings_kwargs: dict, held_out_prompts: int | None) -> dict[str, Any]:
    from chat_tui.services.chat_settings import ChatSettings
    from feedback import Store
    from trainer.pipeline import run_training
    from trainer.settings import TrainSettings

    from bench.loop.evaluation import evaluate_version
    from bench.loop.tastes import get_taste
    from bench.loop.prompt_set import load_prompts

    config = results["config"]
    store = Store(home / "feedback.db")
    version, base = _base(store, results)
    settings = TrainSettings(**settings_kwargs)
    started = time.perf_counter()
    outcome = run_training(settings, store, base, home, home / "models",
                           echo=lambda text: print(text, file=sys.stderr, flush=True))
    train_seconds = time.perf_counter() - started
    prompts = load_prompts(Path(config["prompts_file"])) if config.get("prompts_file") else load_prompts()
    by_id = {p.id: p for p in prompts}
    held_out = [by_id[i] for i in results["prompts"]["held_out_ids"]][:held_out_prompts]
    chat_settings = ChatSettings()
    if config.get("max_new_tokens"):
        chat_settings = dataclasses.replace(chat_settings, max_new_tokens=config["max_new_tokens"])
    taste = get_taste(config.get("taste", "short"))
    base_eval = results.get("evaluation", {}).get("base")
    from engine.loading import load_model

    parent = load_model(version.path)
    if base_eval is None or base_eval["preference_rate"]["total"] != len(held_out):
        evaluated, _ = evaluate_version("base", version.id, version.path, held_out, taste, chat_settings,
                                        config["seed"], config.get("max_batch_rows", 32))
        base_eval = evaluated.as_dict()
    new_version = store.get_model_version(outcome.version_name)
    evaluated, _ = evaluate_version("new", new_version.id, new_version.path, held_out, taste, chat_settings,
                                    config["seed"], config.get("max_batch_rows", 32), parent)
    after = evaluated.as_dict()
    return {
        "train_seconds": train_seconds, "phase_seconds": outcome.phase_seconds,
        "trainer_metrics": {k: v for k, v in outcome.metrics.items() if isinstance(v, (int, float))},
        "rate_before": base_eval["preference_rate"]["rate"], "rate_after": after["preference_rate"]["rate"],
        "after": after, "texts": evaluated.texts,
    }


if __name__ == "__main__":
    main()
