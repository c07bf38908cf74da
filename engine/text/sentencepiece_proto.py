"""Read and write the few fields of a SentencePiece model file that the engine needs.

A `tokenizer.model` file is a protobuf `ModelProto`. The protobuf runtime is not a
dependency of this project, and only a handful of fields matter here, so this module
speaks the protobuf wire format directly:

- the pieces (string, score, type) — to know which pieces are control or user-defined;
- the normalizer's `add_dummy_prefix` flag — read it, and flip it to get a processor that
  encodes text found after a special token without the leading "▁";
- a whole model built from a vocabulary (tokens, scores, types), which is how a GGUF
  file's sentencepiece-style tokenizer becomes a real `tokenizer.model` again.

Field numbers follow sentencepiece's `sentencepiece_model.proto`. Everything not listed
there is kept byte-for-byte when a model is edited. Nothing here runs a tokenizer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Piece types (ModelProto.SentencePiece.Type); GGUF's `tokenizer.ggml.token_type` uses the same numbers.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# TrainerSpec.ModelType
UNIGRAM, BPE = 1, 2

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5

# ModelProto
_PIECES, _TRAINER_SPEC, _NORMALIZER_SPEC = 1, 2, 3
# ModelProto.SentencePiece
_PIECE, _SCORE, _TYPE = 1, 2, 3
# TrainerSpec
_MODEL_TYPE, _VOCAB_SIZE, _BYTE_FALLBACK = 3, 4, 35
_UNK_ID, _BOS_ID, _EOS_ID, _PAD_ID = 40, 41, 42, 43
# NormalizerSpec
_NORM_NAME, _ADD_DUMMY_PREFIX, _REMOVE_EXTRA_WHITESPACES, _ESCAPE_WHITESPACES = 1, 3, 4, 5

Field = tuple[int, int, "int | bytes"]  # (field number, wire type, value)


class ProtoError(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass(frozen=True)
class Piece:
    text: str
    score: float
    type: int


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtoError("message ends inside a varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ProtoError("varint too long")


def _varint(value: int) -> bytes:
    if value < 0:  # negative int32/int64 are written as 10-byte two's complement
        value += 1 << 64
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def parse_fields(buf: bytes) -> list[Field]:
    """Split a serialized message into its top-level fields, in order."""
    fields: list[Field] = []
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire == _BYTES:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise ProtoError("length-delimited field runs past the end")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == _FIXED32:
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == _FIXED64:
            value, pos = buf[pos : pos + 8], pos + 8
        else:
            raise ProtoError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ProtoError("fixed-size field runs past the end")
        fields.append((number, wire, value))
    return fields


def serialize_fields(fields: list[Field]) -> bytes:
    out = bytearray()
    for number, wire, value in fields:
        out += _varint(number << 3 | wire)
        if wire == _VARINT:
            out += _varint(int(value))  # type: ignore[arg-type]
        elif wire == _BYTES:
            out += _varint(len(value)) + value  # type: ignore[arg-type, operator]
        else:
            out += value  # type: ignore[operator]
    return bytes(out)


def _bytes_field(number: int, value: bytes | str) -> Field:
    return (number, _BYTES, value.encode("utf-8") if isinstance(value, str) else value)


def read_pieces(model: bytes) -> list[Piece]:
    """Every piece of the model, in id order."""
    pieces = []
    for number, wire, value in parse_fields(model):
        if number != _PIECES or wire != _BYTES:
            continue
        text, score, kind = "", 0.0, NORMAL
        for sub_number, sub_wire, sub_value in parse_fields(value):  # type: ignore[arg-type]
            if sub_number == _PIECE:
                text = sub_value.decode("utf-8")  # type: ignore[union-attr]
            elif sub_number == _SCORE and sub_wire == _FIXED32:
                score = struct.unpack("<f", sub_value)[0]  # type: ignore[arg-type]
            elif sub_number == _TYPE:
                kind = int(sub_value)  # type: ignore[arg-type]
        pieces.append(Piece(text, score, kind))
    return pieces


def _normalizer(model: bytes) -> list[Field]:
    for number, wire, value in parse_fields(model):
        if number == _NORMALIZER_SPEC and wire == _BYTES:
            return parse_fields(value)  # type: ignore[arg-type]
    return []


def adds_dummy_prefix(model: bytes) -> bool:
    """Whether the model puts "▁" in front of the text it encodes (proto default: yes)."""
    for number, _wire, value in _normalizer(model):
        if number == _ADD_DUMMY_PREFIX:
            return bool(value)
    return True


def with_dummy_prefix(model: bytes, enabled: bool) -> bytes:
    """The same model with the normalizer's `add_dummy_prefix` set to `enabled`."""
    top = parse_fields(model)
    out: list[Field] = []
    found = False
    for number, wire, value in top:
        if number == _NORMALIZER_SPEC and wire == _BYTES:
            sub = [f for f in parse_fields(value) if f[0] != _ADD_DUMMY_PREFIX]  # type: ignore[arg-type]
            sub.append((_ADD_DUMMY_PREFIX, _VARINT, int(enabled)))
            value = serialize_fields(sub)
            found = True
        out.append((number, wire, value))
    if not found:
        out.append((_NORMALIZER_SPEC, _BYTES, serialize_fields([(_ADD_DUMMY_PREFIX, _VARINT, int(enabled))])))
    return serialize_fields(out)


def build_model(
    pieces: list[Piece],
    *,
    add_dummy_prefix: bool = True,
    byte_fallback: bool = True,
    unk_id: int | None = 0,
    bos_id: int | None = 1,
    eos_id: int | None = 2,
    pad_id: int | None = None,
    model_type: int = BPE,
) -> bytes:
    """A complete `tokenizer.model` for the given vocabulary.

    The normalizer is the identity (no NFKC, whitespace runs kept), as in Llama's own
    model, and merges follow the piece scores (BPE), which is how llama.cpp tokenizes a
    sentencepiece-style vocabulary.
    """
    fields: list[Field] = []
    for piece in pieces:
        body = [_bytes_field(_PIECE, piece.text), (_SCORE, _FIXED32, struct.pack("<f", piece.score))]
        if piece.type != NORMAL:
            body.append((_TYPE, _VARINT, piece.type))
        fields.append((_PIECES, _BYTES, serialize_fields(body)))
    trainer = [
        (_MODEL_TYPE, _VARINT, model_type),
        (_VOCAB_SIZE, _VARINT, len(pieces)),
        (_BYTE_FALLBACK, _VARINT, int(byte_fallback)),
    ]
    for number, value in ((_UNK_ID, unk_id), (_BOS_ID, bos_id), (_EOS_ID, eos_id), (_PAD_ID, pad_id)):
        trainer.append((number, _VARINT, -1 if value is None else value))
    fields.append((_TRAINER_SPEC, _BYTES, serialize_fields(trainer)))
    normalizer = [
        _bytes_field(_NORM_NAME, "identity"),
        (_ADD_DUMMY_PREFIX, _VARINT, int(add_dummy_prefix)),
        (_REMOVE_EXTRA_WHITESPACES, _VARINT, 0),
        (_ESCAPE_WHITESPACES, _VARINT, 1),
    ]
    fields.append((_NORMALIZER_SPEC, _BYTES, serialize_fields(normalizer)))
    return serialize_fields(fields)
