"""Memory of the arena's two versions: two full models, or one base and a delta sharing it.

The arena answers each prompt with two versions of one base. This measures what holding
both costs, on the default model (SmolLM2-135M) and a version "trained" from it the way
`chat-tui train` trains on a CPU by default: LoRA rank 8 on the attention and MLP
projections of the top 4 layers (random adapter factors: the memory does not depend on
what was learned). Each variant runs in a fresh process, so its resident memory is its own:

    full     load both versions as two independent models
    shared   load both, then share_unchanged_weights (what the app's arena does)

It also prints the versions' sizes on disk, whole and as a delta (engine/loading/delta.py),
and the bytes of distinct weight tensors each variant holds (independent of the allocator).

    python -m bench.arena_memory [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RANK = 8
TOP_LAYERS = 4
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def distinct_weight_mb(*models) -> float:
    seen: dict[int, int] = {}
    for model in models:
        for param in model.parameters():
            seen[param.data_ptr()] = param.numel() * param.element_size()
    return sum(seen.values()) / 1e6


def prepare(root: Path) -> tuple[str, str]:
    """The default model and a LoRA-trained child saved as a delta, in a store at `root`."""
    import torch

    from engine.loading import ModelStore, load_model
    from engine.loading.default_model import ensure_default_model

    base_dir = ensure_default_model(root)
    base = load_model(base_dir)
    layers = base.model.model.layers
    generator = torch.Generator().manual_seed(0)
    low_rank = {}
    for index in range(len(layers) - TOP_LAYERS, len(layers)):
        for name, module in layers[index].named_modules():
            if name.split(".")[-1] in TARGETS:
                out_features, in_features = module.weight.shape
                a = torch.randn(RANK, in_features, generator=generator) / in_features**0.5
                b = torch.randn(out_features, RANK, generator=generator) * 0.01
                low_rank[f"model.layers.{index}.{name}.weight"] = (b, a)
    store = ModelStore(root)
    store.save_model(base, "tuned-delta", state_dict=base.model.state_dict(), base=base_dir.name, low_rank=low_rank)
    store.save_model(base, "tuned-whole", state_dict=base.model.state_dict(), low_rank=low_rank)
    return str(base_dir), str(root / "tuned-delta")


def measure(variant: str, base_dir: str, tuned_dir: str) -> dict:
    """Run in a child process: load both versions as `variant` says; report memory."""
    import gc

    import torch

    from engine.loading import load_model
    from engine.loading.delta import share_unchanged_weights

    torch.set_num_threads(1)
    ids = torch.tensor([[1, 2, 3, 4]])

    def answer(loaded) -> None:
        # A forward pass reads every weight, as serving does: weights read lazily from the
        # file (memory-mapped) count in the resident size only once touched.
        with torch.no_grad():
            loaded.model(ids)

    before = rss_mb()
    base = load_model(base_dir)
    answer(base)
    one = rss_mb()
    tuned = load_model(tuned_dir)
    if variant == "shared":
        share_unchanged_weights(tuned.model, base.model)
    gc.collect()
    answer(tuned)
    answer(base)
    return {"variant": variant, "rss_before_mb": before, "rss_one_model_mb": one, "rss_both_mb": rss_mb(),
            "distinct_weights_mb": distinct_weight_mb(base.model, tuned.model)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, default=None, help="Build the store here and keep it.")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "BASE", "TUNED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="arena-memory-"))
    base_dir, tuned_dir = prepare(root)
    for name in ("SmolLM2-135M-Instruct", "tuned-whole", "tuned-delta"):
        folder = root / name if (root / name).is_dir() else Path(base_dir)
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        print(f"on disk: {folder.name:<24} {size / 1e6:8.1f} MB")
    for variant in ("full", "shared"):
        out = subprocess.run([sys.executable, "-m", "bench.arena_memory", "--child", variant, base_dir, tuned_dir],
                             check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        added = result["rss_both_mb"] - result["rss_one_model_mb"]
        print(f"{variant:<7} RSS with one model {result['rss_one_model_mb']:7.0f} MB, with both "
              f"{result['rss_both_mb']:7.0f} MB (+{added:.0f} MB for the second); distinct weights "
              f"{result['distinct_weights_mb']:.0f} MB")


if __name__ == "__main__":
    main()
