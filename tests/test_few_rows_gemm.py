"""The few-row C++ product kernel: right answers for every tile shape, the same bits for a
row whatever else is in the batch, a cached build, and a clean fallback without it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import engine.kernels.few_rows_gemm as few_rows_gemm
import engine.kernels.llama_decode as llama_decode
import engine.kernels.native_library as native_library
from engine.kernels.built_once import NOT_TRIED
from engine.kernels.cpu_linear import FEW_ROWS_MAX, cpu_linear
from engine.kernels.few_rows_gemm import few_rows_linear


def test_the_kernel_builds_here():
    # CI machines have a C++ compiler, so the kernel must really be in use there.
    assert few_rows_gemm.available()


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 11, 16, 24])
@pytest.mark.parametrize("outputs, inner", [(48, 96), (29, 37), (1, 16), (7, 1536)])
def test_matches_a_float64_product(rows, outputs, inner):
    # Odd sizes leave partial weight blocks (outputs not a multiple of the block) and
    # partial vectors (inner not a multiple of 16).
    generator = torch.Generator().manual_seed(rows * 1000 + outputs)
    x = torch.randn(rows, inner, generator=generator)
    weight = torch.randn(outputs, inner, generator=generator)
    want = x.double() @ weight.double().T
    torch.testing.assert_close(few_rows_linear(x, weight).double(), want, rtol=1e-5, atol=1e-4)


def test_a_rows_result_does_not_depend_on_the_other_rows():
    # Batched greedy decoding must pick what the same sequence alone would pick, so a row
    # gets the same bits whichever tile (8, 4, 2 or 1 rows) it lands in.
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(1537, 576, generator=generator)
    x = torch.randn(24, 576, generator=generator)
    everything = few_rows_linear(x, weight)
    for rows in range(1, 25):
        assert torch.equal(few_rows_linear(x[:rows].contiguous(), weight), everything[:rows]), rows
    assert torch.equal(few_rows_linear(x[13:14].contiguous(), weight), everything[13:14])


@pytest.mark.parametrize("rows", [2, 5, FEW_ROWS_MAX])
def test_cpu_linear_uses_the_kernel_for_a_few_rows(rows):
    generator = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 1, 96, generator=generator)  # decode's (B, 1, d) activations
    weight, bias = torch.randn(48, 96, generator=generator), torch.randn(48, generator=generator)
    with torch.inference_mode():
        ours = cpu_linear(x, weight, bias)
    assert torch.equal(ours, (few_rows_linear(x.view(rows, 96), weight) + bias).view(rows, 1, 48))
    torch.testing.assert_close(ours, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_build_goes_to_the_cache_once(tmp_path):
    # A fresh process with an empty cache builds one library there (and nothing
    # half-written is left beside it); a second process loads it without building.
    script = textwrap.dedent("""
        import engine.kernels.few_rows_gemm as k, torch
        assert k.available()
        x, w = torch.randn(3, 40), torch.randn(9, 40)
        torch.testing.assert_close(k.few_rows_linear(x, w), x @ w.T, rtol=1e-5, atol=1e-5)
    """)
    env = {**os.environ, "CHAT_TUI_KERNEL_CACHE": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    built = list(tmp_path.iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"
    first_mtime = built[0].stat().st_mtime_ns
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    assert list(tmp_path.iterdir()) == built and built[0].stat().st_mtime_ns == first_mtime


@pytest.mark.parametrize("compiler", ["no-such-compiler-here", "false"])
def test_without_a_working_compiler_products_fall_back(compiler, tmp_path, monkeypatch, caplog):
    # No compiler on PATH, or one that fails: one warning for the whole library, no
    # exception, both kernels off, and cpu_linear still computes the product (by oneDNN).
    monkeypatch.setenv("CXX", compiler)
    monkeypatch.setenv("CHAT_TUI_KERNEL_CACHE", str(tmp_path))
    for built in (native_library._library, few_rows_gemm._function, llama_decode._function):
        monkeypatch.setattr(built, "result", NOT_TRIED)  # not tried yet in this process
    with caplog.at_level(logging.WARNING, logger="engine"):
        assert not few_rows_gemm.available()
        assert not llama_decode.available()
        assert few_rows_linear(torch.randn(2, 8), torch.randn(3, 8)) is None
    assert len(caplog.records) == 1 and "PyTorch's take their place" in caplog.records[0].getMessage()
    x, weight = torch.randn(4, 96), torch.randn(48, 96)
    with torch.inference_mode():
        torch.testing.assert_close(cpu_linear(x, weight), F.linear(x, weight), rtol=1e-5, atol=1e-5)
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind


def test_every_kernel_source_is_packaged():
    # A non-editable install ships only the package-data patterns of the packages it finds:
    # a missing header means the build fails on the user's machine and every C++ kernel is
    # silently off.
    import tomllib
    from fnmatch import fnmatch
    from pathlib import Path

    root = Path(__file__).parents[1]
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools["package-data"]["*"]
    for path in native_library.SOURCES + native_library.HEADERS:
        assert path.is_file(), path
        assert any(fnmatch(path.name, pattern) for pattern in patterns), path.name
        package = ".".join(path.parent.relative_to(root).parts)
        assert (path.parent / "__init__.py").is_file(), package
        assert any(fnmatch(package, pattern) for pattern in setuptools["packages"]["find"]["include"]), package


def test_the_cached_library_is_named_by_its_sources(tmp_path, monkeypatch):
    # A changed source or header must build a new library, never load the old one.
    import shutil

    monkeypatch.setenv("CHAT_TUI_KERNEL_CACHE", str(tmp_path / "cache"))
    sources = tmp_path / "sources"
    sources.mkdir()
    for path in native_library.SOURCES + native_library.HEADERS:
        shutil.copy(path, sources / path.name)
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    original = native_library.cached_path(compiler, sources)
    assert original == native_library.cached_path(compiler)  # the copies are the installed sources
    for path in native_library.SOURCES + native_library.HEADERS:
        text = (sources / path.name).read_text()
        (sources / path.name).write_text(text + "\n// changed\n")
        assert native_library.cached_path(compiler, sources) != original, path.name
        (sources / path.name).write_text(text)
    assert native_library.cached_path(compiler, sources) == original
