"""The reward-model phase: a scalar-head copy of the policy trained on the ranked pairs.

The trained model is saved under the data directory's reward_models/ folder before the
phase is marked done, so a resumed run loads it instead of training it again.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from trainer.datasets import TrainingSets
from trainer.reward_model import ScalarHeadModel, load_reward_model, save_reward_model
from trainer.reward_training import RewardTrainingConfig, train_reward_model
from trainer.run import TrainingRun, make_head_model_trainable, version_name


def run_phase(run: TrainingRun, loaded: Any, sets: TrainingSets, pad_id: int) -> tuple[ScalarHeadModel, dict[str, float]]:
    """(the reward model, in eval mode; its metrics)."""
    if "reward" in run.state.get("done", []):
        run.echo(f"reward model: done in an earlier attempt, loading {run.state['reward_model_path']}")
        return load_reward_model(Path(run.state["reward_model_path"]), run.device_name), run.state["reward_metrics"]
    reward_model = ScalarHeadModel.from_policy(loaded.model)
    make_head_model_trainable(reward_model, run.settings)
    started = time.perf_counter()
    config = RewardTrainingConfig.from_settings(run.settings, run.trunk_layers)
    result = train_reward_model(reward_model, sets.train_groups, sets.eval_groups, config, run.accelerator, pad_id,
                                run.progress)
    run.timed("reward", started)
    path = run.data_dir / "reward_models" / version_name(run.base, "rm", run.run_id or 0)
    if run.is_main:
        if path.exists():  # saved by an attempt killed before it could record it
            shutil.rmtree(path)
        save_reward_model(reward_model, path, {"run_id": run.run_id, "base": run.base.name, **result.metrics})
    run.save_state(done=run.state.get("done", []) + ["reward"], reward_model_path=str(path), reward_metrics=result.metrics)
    run.record({"reward": result.metrics})
    return reward_model.eval(), result.metrics
