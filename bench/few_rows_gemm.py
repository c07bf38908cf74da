"""The few-row product kernel against oneDNN on the default model's own weights.

Runs every decoder-layer product of the model once per pass (q, k, v, o, gate, up, down
of all layers: the weights come from memory, not cache, as in a decode step) for each row
count, and prints milliseconds per pass, the weight read rate, and the ratio.

    python bench/few_rows_gemm.py --rows 1,2,4,8,16,24,32
"""

from __future__ import annotations

import argparse
import time

import torch


def best_pass_ms(product, weights: list[torch.Tensor], rows: int, repeats: int) -> float:
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in weights}
    for weight in weights[:7]:
        product(inputs[weight.shape[1]], weight)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for weight in weights:
            product(inputs[weight.shape[1]], weight)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,2,4,8,16,24,32", help="comma-separated row counts")
    parser.add_argument("--repeats", type=int, default=5, help="passes per measurement (the best is kept)")
    parser.add_argument("--model", default=None, help="model name or path (default: the default model)")
    args = parser.parse_args()

    from chat_tui.paths import models_dir
    from engine.kernels import few_rows_gemm
    from engine.loading import load_model

    if not few_rows_gemm.available():
        raise SystemExit("the few-row kernel could not be built here (see the warning above)")
    model = load_model(args.model, store_root=models_dir()).model
    weights = [m.weight.detach() for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ".layers." in name]
    megabytes = sum(w.numel() * w.element_size() for w in weights) / 1e6
    print(f"{len(weights)} layer weights, {megabytes:.0f} MB, {torch.get_num_threads()} threads")

    def onednn(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")

    with torch.inference_mode():
        for rows in (int(r) for r in args.rows.split(",")):
            theirs = best_pass_ms(onednn, weights, rows, args.repeats)
            ours = best_pass_ms(few_rows_gemm.few_rows_linear, weights, rows, args.repeats)
            print(f"{rows:3d} rows: oneDNN {theirs:6.1f} ms, kernel {ours:6.1f} ms "
                  f"({megabytes / ours:5.1f} GB/s) -> {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
