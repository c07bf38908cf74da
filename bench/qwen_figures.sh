#!/bin/sh
# The README's figures for Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, fetched by
# `sh scripts/install.sh --qwen`), on a CPU, with this project importable (installed, or
# on PYTHONPATH), each step in its own process:
#   1. `chat-tui models import` of the GGUF file (wall time; peak RSS from /proc);
#   2. `chat-tui bench` decode throughput at 1 and 8 requests, 128 new tokens, no HF;
#   3. a short training round: the loop benchmark with 16 prompts ranked (2 replies
#      each, 64 tokens) and `chat-tui train --algo dpo` on them (LoRA, top 4 layers),
#      which records the round's wall time and peak RSS in results.json.
# Load average before and after goes into the log: on a shared VM the figures move with it.
# Usage: sh bench/qwen_figures.sh [OUTPUT_DIR [GGUF]]   (default bench/out/qwen)
set -eu
out=${1:-bench/out/qwen}
gguf=${2:-$(python3 -c 'from chat_tui.model_downloads import PACKAGED; print(PACKAGED["qwen2.5-coder-0.5b"].path())')}
mkdir -p "$out"
export CHAT_TUI_HOME="$out/home"
rm -rf "$CHAT_TUI_HOME"
log="$out/figures.log"
echo "load before: $(cat /proc/loadavg)" | tee "$log"
python3 - "$gguf" <<'PY' 2>&1 | tee -a "$log"
import resource, subprocess, sys, time
started = time.perf_counter()
subprocess.run([sys.executable, "-m", "chat_tui", "models", "import", sys.argv[1], "--name", "qwen2.5-coder-0.5b"], check=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"import: {time.perf_counter() - started:.1f} s wall, peak RSS {peak:.0f} MB")
PY
python3 -m chat_tui bench --model qwen2.5-coder-0.5b --concurrency 1,8 --max-tokens 128 --no-hf 2>&1 | tee -a "$log"
python3 -m bench.loop run --out "$out/loop" --model "$CHAT_TUI_HOME/models/qwen2.5-coder-0.5b" --algo dpo --k 2 --train-prompts 16 \
    --held-out-prompts 8 --max-new-tokens 64 --threads 2 2>&1 | tail -n 30 | tee -a "$log"
echo "load after: $(cat /proc/loadavg)" | tee -a "$log"
