"""The engine's fast CPU paths, each with a PyTorch fallback.

The C++ library (`native_library`, sources `*.cpp`, `cpu_kernels.h` and `cpu_quant.h`
beside it) with its checked kernels: the few-row product (`few_rows_gemm`) and the whole
Llama decode step (`llama_decode`, checked by `decode_probe`), from fp32 weights or from
8-bit and 4-bit block-quantized ones (`quant_types` names them, `quantize` makes them,
`quantized_copy` keeps a model's copy, `forced_decode` decodes a known text for measuring
them); `cpu_linear`, which routes fp32 `F.linear` calls to the fastest product; and
`built_once`, which builds each of these once per process or remembers that it cannot. Not here: which rows run or what
a step computes (the runner decides when to call these).
"""
