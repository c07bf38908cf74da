"""A model's weight matrices in 8 or 4 bits, kept beside its fp32 weights for decoding.

The chat decodes from a quantized copy: a decode step reads every weight once, so
a quarter or an eighth of the bytes is that much less to wait for. The fp32 weights stay
what the model is: prefill runs on them (PyTorch, many rows at once, where bytes matter
less than arithmetic), training updates them, and the copy follows them:
every matrix remembers the version (PyTorch's count of in-place writes) and the address
of the tensor it was made from, and is made again when either changed. So a model
trained between steps is decoded as it is now, and a new version loaded into the chat
gets a copy of its own.

Which matrices: the seven projections of every layer in the chosen type, and the LM head
in q8_0 whatever the type (it is the largest single matrix of a small model and the
most sensitive to rounding; llama.cpp's own quantizer keeps it in 8 bits or more, and in
Q8_0 for the default model's shape). Norms, biases and the embedding table stay fp32.

A GGUF file whose matrices are stored in the chosen type (and whose head is Q8_0) gives
its blocks as they are, without the round trip through fp32: the values are the file's
to the bit, and nothing is computed but a change of layout. They stand for the weights
only while those are unchanged since loading, which is checked.

Not here: the kernel's weight table (engine/kernels/llama_decode.py), the formats
(engine/kernels/quantize.py), which type the chat uses (chat_tui).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gguf import GGMLQuantizationType

from engine.bundle import LoadedModel
from engine.config import ModelConfig
from engine.kernels.quant_types import QUANT_TYPES
from engine.kernels.quantize import QuantizedMatrix, dequantize, from_gguf_blocks, quantize_matrix

HEAD_QUANT = "q8_0"  # the LM head's type under every quantized type (module docstring)


def _version(weight: torch.Tensor) -> int:
    """PyTorch's count of in-place writes to the tensor; -1 for a tensor made in inference
    mode, which keeps no count (and is not trained)."""
    return -1 if weight.is_inference() else weight._version


@dataclass
class _Made:
    """One quantized matrix and the state of the tensor it stands for."""

    matrix: QuantizedMatrix
    address: int
    version: int


class QuantizedCopy:
    """The quantized matrices of one model, made on first use and again when stale.

    quant: "q8_0" or "q4_0". gguf: the GGUF file the model was loaded from and its config,
    to take the matrices it stores in the wanted types as they are."""

    def __init__(self, quant: str, gguf: tuple[Path, ModelConfig] | None = None) -> None:
        if quant not in QUANT_TYPES or quant == "none":
            raise ValueError(f"{quant!r} is not a quantized type (one of {', '.join(QUANT_TYPES[1:])})")
        self.quant = quant
        self._gguf = gguf
        self._file_blocks: dict[str, QuantizedMatrix] | None = None
        self._made: dict[str, _Made] = {}
        self.from_file: set[str] = set()  # the matrices taken from the file as they are

    def type_of(self, is_head: bool) -> str:
        return HEAD_QUANT if is_head else self.quant

    def matrix(self, name: str, weight: torch.Tensor, is_head: bool = False) -> QuantizedMatrix:
        """The quantized form of `weight` (the parameter `name`) as it is now."""
        made = self._made.get(name)
        if made is not None and made.address == weight.data_ptr() and made.version == _version(weight):
            return made.matrix
        quant = self.type_of(is_head)
        matrix = self._file_matrix(name, quant, weight)
        if matrix is None:
            matrix = quantize_matrix(weight.detach(), quant)
        self._made[name] = _Made(matrix, weight.data_ptr(), _version(weight))
        return matrix

    def _file_matrix(self, name: str, quant: str, weight: torch.Tensor) -> QuantizedMatrix | None:
        """The file's blocks for `name` when they are of type `quant` and still stand for
        the weights: the first and last rows they give are the weights' to the bit (the
        loader dequantized the same blocks; any training since moves them)."""
        if self._gguf is None:
            return None
        if self._file_blocks is None:
            self._file_blocks = blocks_in_file(*self._gguf)
        matrix = self._file_blocks.pop(name, None)  # good once: after a change the weights differ
        if matrix is None or matrix.quant != quant or matrix.shape != tuple(weight.shape):
            return None
        rows = [0, weight.shape[0] - 1]
        if not torch.equal(dequantize(_rows(matrix, rows)), weight.detach()[rows].float()):
            return None
        self.from_file.add(name)
        return matrix

    @property
    def nbytes(self) -> int:
        return sum(made.matrix.nbytes for made in self._made.values())


def _rows(matrix: QuantizedMatrix, rows: list[int]) -> QuantizedMatrix:
    return QuantizedMatrix(matrix.quant, matrix.data[rows], matrix.scales[rows], matrix.columns)


def blocks_in_file(path: Path, config: ModelConfig) -> dict[str, QuantizedMatrix]:
    """Every matrix a GGUF file stores as Q8_0 or Q4_0, in the kernel's layout, by HF name."""
    from engine.loading.gguf_config import gguf_layout
    from engine.loading.gguf_file import open_gguf
    from engine.loading.gguf_names import from_gguf_layout, hf_tensor_name

    types = {int(GGMLQuantizationType.Q8_0): "q8_0", int(GGMLQuantizationType.Q4_0): "q4_0"}
    file = open_gguf(path)
    layout = gguf_layout(file.fields, path)
    out: dict[str, QuantizedMatrix] = {}
    for tensor in file.tensors:
        name, quant = hf_tensor_name(tensor.name, layout), types.get(tensor.type_number)
        if name is None or quant is None or len(tensor.shape) != 2:
            continue
        rows, columns = tensor.shape  # numpy's order: slowest dimension first
        matrix = from_gguf_blocks(file.raw(tensor), quant, rows, columns)
        # llama.cpp's order of the query and key rows, undone as the loader does for the weights.
        data = torch.from_numpy(from_gguf_layout(name, matrix.data.numpy(), config, layout).copy())
        scales = torch.from_numpy(from_gguf_layout(name, matrix.scales.numpy(), config, layout).copy())
        out[name] = QuantizedMatrix(quant, data, scales, columns)
    return out


def quantized_copy(loaded: LoadedModel, quant: str) -> QuantizedCopy | None:
    """The copy the engine decodes `loaded` from with weights of type `quant` (None for
    "none"), taking a GGUF file's blocks where it has them in that type."""
    if quant == "none":
        return None
    is_gguf = loaded.metadata.get("format") == "gguf" and Path(loaded.path).is_file()
    return QuantizedCopy(quant, (Path(loaded.path), loaded.config) if is_gguf else None)
