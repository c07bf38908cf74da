"""`chat-tui clean`: remove what interrupted work left in the data directory.

Three kinds of leftovers, each removed only when nothing will come back for it:

- staging folders of model imports (`models/.NAME.PID-XXXX.partial`) whose process is
  gone: `engine.loading.ModelStore.abandoned_staging` decides;
- checkpoint folders of training runs (`training/run-N`) whose run the feedback store
  records as finished (succeeded, failed, cancelled or abandoned): a running or
  resumable run keeps its folder, and so does a folder no recorded run owns;
- half-written reward models (`reward_models/.NAME.tmp-PID`) whose process is gone.

It prints each removal and the space freed; `--dry-run` only lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click


@dataclass(frozen=True)
class Leftover:
    path: Path
    size_bytes: int
    why: str


def finished_run_folders(data_dir: Path, database: Path) -> list[Leftover]:
    """Checkpoint folders of runs the store records as finished."""
    from engine.loading.model_store import folder_size
    from feedback import Store
    from feedback.errors import NotFoundError
    from feedback.versions import FINISHED_STATUSES
    from trainer.checkpoints import run_folder, runs_root

    root = runs_root(data_dir)
    if not root.is_dir() or not database.is_file():
        return []
    found = []
    with Store(database) as store:
        for folder in sorted(root.iterdir()):
            run_id = folder.name.removeprefix("run-")
            if not (folder.is_dir() and run_id.isdigit() and folder == run_folder(data_dir, int(run_id))):
                continue
            try:
                status = store.get_training_run(int(run_id)).status
            except NotFoundError:
                continue  # no recorded run owns it: not ours to judge
            if status in FINISHED_STATUSES:
                found.append(Leftover(folder, folder_size(folder), f"checkpoints of training run {run_id} ({status})"))
    return found


def abandoned_imports(models: Path) -> list[Leftover]:
    """Staging folders of model imports whose process is gone."""
    from engine.loading import ModelStore
    from engine.loading.model_store import folder_size

    return [Leftover(path, folder_size(path), "an interrupted model import")
            for path in ModelStore(models).abandoned_staging()]


def abandoned_reward_models(data_dir: Path) -> list[Leftover]:
    """Reward models whose writing process was killed before it renamed them into place."""
    from engine.loading.model_store import folder_size
    from trainer.phases.reward import reward_models_root
    from trainer.reward_model import abandoned_temp_folders

    return [Leftover(path, folder_size(path), "a reward model whose saving was interrupted")
            for path in abandoned_temp_folders(reward_models_root(data_dir))]


@click.command(name="clean")
@click.option("--dry-run", is_flag=True, help="List what would be removed, and remove nothing.")
def clean(dry_run: bool) -> None:
    """Remove what interrupted imports and finished training runs left behind.

    Deletes the hidden staging folders of model imports that were killed, and the
    checkpoint folders of training runs that are over (succeeded, failed, cancelled or
    abandoned). Says how much space that frees.
    """
    import shutil

    from chat_tui.paths import data_dir, database_path, models_dir

    leftovers = (abandoned_imports(models_dir()) + finished_run_folders(data_dir(), database_path())
                 + abandoned_reward_models(data_dir()))
    freed = 0
    for leftover in leftovers:
        if not dry_run:
            shutil.rmtree(leftover.path, ignore_errors=True)
            if leftover.path.exists():
                continue
        freed += leftover.size_bytes
        verb = "would remove" if dry_run else "removed"
        click.echo(f"{verb} {leftover.path} ({leftover.size_bytes / 1e6:.1f} MB): {leftover.why}")
    total = f"{freed / 1e6:.1f} MB"
    if not leftovers:
        click.echo("Nothing to clean.")
    elif dry_run:
        click.echo(f"Would free {total} in {len(leftovers)} folder(s).")
    else:
        click.echo(f"Freed {total}.")
