"""The reward-model phase: a scalar-head model trained on the ranked pairs and lone thumbs.

The reward model is updated, not rebuilt: when an earlier run left a reward model of the
same shape (and, with top-layer training, the same frozen bottom layers as this policy),
the phase starts from it, first measures how well it predicted the feedback given since
it was trained (the honest test of a reward model: it never saw that feedback), then
trains on everything. Otherwise it starts from a copy of the policy.

The trained model is saved under the data directory's reward_models/ folder, with the
feedback snapshot it saw, before the phase is marked done, so a resumed run loads it
instead of training it again.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from trainer.datasets import TrainingSets
from trainer.reward_model import (
    ScalarHeadModel, latest_reward_model, load_reward_model, reward_model_metadata, save_reward_model,
)
from trainer.reward_training import RewardTrainingConfig, pair_accuracy, train_reward_model
from trainer.run import TrainingRun, make_head_model_trainable, version_name
from trainer.trunk import same_trunk


def reward_models_folder(run: TrainingRun) -> Path:
    return reward_models_root(run.data_dir)


def reward_models_root(data_dir: Path) -> Path:
    """Where every run's reward model is kept."""
    return data_dir / "reward_models"


def starting_model(run: TrainingRun, loaded: Any, sets: TrainingSets, pad_id: int) -> tuple[ScalarHeadModel, dict[str, float]]:
    """The previous run's reward model with its score on the feedback given since, or a
    fresh one from the policy (and no such score)."""
    previous = latest_reward_model(reward_models_folder(run), loaded.config)
    if previous is None:
        return ScalarHeadModel.from_policy(loaded.model), {}
    model = load_reward_model(previous, run.device_name)
    if run.trunk_layers and not same_trunk([loaded.model, model], run.trunk_layers):
        run.echo(f"reward model: {previous.name} does not share this base's frozen layers; training a new one")
        return ScalarHeadModel.from_policy(loaded.model), {}
    seen = int(reward_model_metadata(previous).get("snapshot_action_id", 0))
    since = [g for g in sets.train_groups + sets.eval_groups if g.newest_action > seen and g.pairs]
    metrics: dict[str, float] = {"updated_from_run": float(reward_model_metadata(previous).get("run_id", 0))}
    if since:
        with run.accelerator.autocast():
            prior = pair_accuracy(model, since, pad_id, run.accelerator.device)
        metrics.update({"prior_accuracy": prior["accuracy"], "prior_pairs": prior["pairs"]})
        run.echo(f"reward model: {previous.name} ordered {100 * prior['accuracy']:.0f}% of the "
                 f"{int(prior['pairs'])} pairs given since it was trained as you did")
    return model, metrics


def run_phase(run: TrainingRun, loaded: Any, sets: TrainingSets, pad_id: int) -> tuple[ScalarHeadModel, dict[str, float]]:
    """(the reward model, in eval mode; its metrics)."""
    if "reward" in run.state.get("done", []):
        run.echo(f"reward model: done in an earlier attempt, loading {run.state['reward_model_path']}")
        return load_reward_model(Path(run.state["reward_model_path"]), run.device_name), run.state["reward_metrics"]
    started = time.perf_counter()
    reward_model, metrics = starting_model(run, loaded, sets, pad_id)
    make_head_model_trainable(reward_model, run.settings)
    config = RewardTrainingConfig.from_settings(run.settings, run.trunk_layers)
    result = train_reward_model(reward_model, sets.train_groups, sets.eval_groups, config, run.accelerator, pad_id,
                                run.progress)
    metrics.update(result.metrics)
    run.timed("reward", started)
    path = reward_models_folder(run) / version_name(run.base, "rm", run.run_id or 0)
    if run.is_main:
        if path.exists():  # saved by an attempt killed before it could record it
            shutil.rmtree(path)
        save_reward_model(reward_model, path, {"run_id": run.run_id, "base": run.base.name,
                                               "snapshot_action_id": sets.snapshot_action_id, **metrics})
    run.save_state(done=run.state.get("done", []) + ["reward"], reward_model_path=str(path), reward_metrics=metrics)
    run.record({"reward": metrics})
    return reward_model.eval(), metrics
