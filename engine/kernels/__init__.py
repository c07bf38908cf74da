"""The engine's fast CPU paths, each with a PyTorch fallback.

The C++ library (`native_library`, sources `*.cpp` and `cpu_kernels.h` beside it) with
its two checked kernels: the few-row product (`few_rows_gemm`) and the whole Llama decode
step (`llama_decode`); `cpu_linear`, which routes fp32 `F.linear` calls to the fastest
product; `quantize`, int8 weight-only linear layers; and `built_once`, which builds each
of these once per process or remembers that it cannot. Not here: which rows run or what
a step computes (the runner decides when to call these).
"""
