#!/bin/sh
# The engine's GPU checks and figures, on a machine with a CUDA GPU and this project
# importable (installed, or on PYTHONPATH):
#   1. the CUDA tests: recorded graphs replay exactly what the same fixed-shape steps
#      compute eagerly (bf16), and fp32 batched greedy equals one sequence alone
#      (skipped with GPU_FIGURES_TESTS=0);
#   2. `chat-tui bench` in bf16 at 1, 8 and 32 requests, 128 new tokens, with CUDA
#      graphs and against HF transformers' generate;
#   3. the same without CUDA graphs (--no-graphs), for what the graphs are worth.
# Usage: sh bench/gpu_figures.sh [OUTPUT_DIR [MODEL]]
#   OUTPUT_DIR defaults to bench/out/gpu, MODEL to the default model.
set -eu
out=${1:-bench/out/gpu}
model=${2:-default}
mkdir -p "$out"
python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torch.cuda.get_device_name())'
if [ "${GPU_FIGURES_TESTS:-1}" != 0 ]; then
    python3 -m pytest -q -rs -p no:cacheprovider tests/test_graphed_decode.py tests/test_engine.py 2>&1 | tee "$out/tests.log"
fi
python3 -m chat_tui bench --model "$model" --device cuda --concurrency 1,8,32 --max-tokens 128 2>&1 \
    | tee "$out/bench_graphs.txt"
python3 -m chat_tui bench --model "$model" --device cuda --concurrency 1,8,32 --max-tokens 128 --no-graphs --no-hf 2>&1 \
    | tee "$out/bench_no_graphs.txt"
