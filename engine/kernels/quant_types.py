"""The weight types the C++ decode step reads, by name; importable without torch (the
command line lists them in its help).

"none" is the weights as they are (fp32); "q8_0" and "q4_0" are 8-bit and 4-bit blocks
of 32 values with an fp16 scale each (engine/kernels/quantize.py has the formats).
"""

from __future__ import annotations

QUANT_TYPES = ("none", "q8_0", "q4_0")
# The kernel's number for each type (llama_decode.cpp's weight table; cpu_quant.h's Kind).
KINDS = {"none": 0, "q8_0": 1, "q4_0": 2}
# Bits per weight, scales included.
BITS_PER_WEIGHT = {"none": 32.0, "q8_0": 8.5, "q4_0": 4.5}
