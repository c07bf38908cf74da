"""Pretraining a small PaLM from scratch on the user's own text.

`pretrain(settings, on_event)` trains a sentencepiece tokenizer on the corpus, then a PaLM
model (engine/models/palm.py) with next-token cross-entropy under `accelerate`, so the
same code runs as one CPU process or as one process per GPU
(`accelerate launch -m chat_tui.commands.pretrain ...`). It reports progress, held-out
loss against the unigram baseline, and sample text through the `on_event` callback,
saves a resumable checkpoint every few hundred steps (and on Ctrl-C) under
`<data dir>/pretrain/<name>/`, and finally writes an ordinary model directory into the
model store (config.json, model.safetensors, tokenizer.model, tokenizer_config.json with
a small chat template). Corpus reading and the tokenizer live in
trainer/pretrain_data.py; the command line in chat_tui/commands/pretrain.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import sentencepiece as spm
import torch
from accelerate.utils import broadcast_object_list
import torch.nn.functional as F

from engine.config import ModelConfig
from engine.loading.checkpoint import Checkpoint, stored_tensors
from engine.loading.model_store import VALID_NAME, ModelStore
from engine.text.tokenizer import Tokenizer
from engine.models.palm import PalmForCausalLM, palm_config
from trainer.errors import TrainerError
from trainer.runtime import check_finite, make_accelerator
from trainer.pretrain_data import (
    BOS_ID,
    CHAT_MARKERS,
    EOS_ID,
    read_corpus,
    split_blocks,
    tokenize_documents,
    train_tokenizer,
    unigram_baseline,
)


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_layers: int
    num_heads: int
    block_size: int  # training context length
    batch_size: int  # rows per process per step
    learning_rate: float


# Rough parameter counts with a 4096-piece vocabulary: tiny 1.3M, small 5.8M, base 27M,
# medium 90M. tiny trains usefully on a laptop CPU in minutes; the rest want a GPU.
SIZES: dict[str, ModelShape] = {
    "tiny": ModelShape(128, 4, 4, 128, 16, 3e-3),
    "small": ModelShape(256, 6, 8, 256, 16, 1.5e-3),
    "base": ModelShape(512, 8, 8, 512, 16, 1e-3),
    "medium": ModelShape(768, 12, 12, 1024, 16, 6e-4),
}

# The chat template written into tokenizer_config.json. A conversation starts with <s>
# like every training document; the markers are single sentencepiece pieces
# (pretrain_data.CHAT_MARKERS); `<|end|>` closes every turn and is one of the model's
# end-of-sequence ids, so generation stops there.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

RUN_SETTINGS = "settings.json"
RUN_TOKENIZER = "tokenizer.model"
RUN_TOKENS = "tokens.pt"
RUN_CHECKPOINT = "checkpoint"
RUN_PROGRESS = "progress.json"


@dataclass
class PretrainSettings:
    data: str
    out: str
    vocab_size: int = 4096
    size: str = "tiny"
    steps: int = 1000
    model_type: str = "bpe"  # sentencepiece algorithm: "bpe" or "unigram"
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda"; under `accelerate launch` each process its own GPU
    eval_every: int = 0  # 0: ten evaluations per run
    sample_every: int = 0  # 0: with every evaluation; -1: never
    checkpoint_every: int = 250
    max_eval_rows: int = 256  # held-out rows used by the periodic evaluations
    # Overrides of the size's shape (tests and experiments); None keeps the size's value.
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    block_size: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None

    def shape(self) -> ModelShape:
        if self.size not in SIZES:
            raise TrainerError(f"model size {self.size!r} is not one of {', '.join(SIZES)}")
        base = asdict(SIZES[self.size])
        for key in base:
            if getattr(self, key) is not None:
                base[key] = getattr(self, key)
        shape = ModelShape(**base)
        if shape.hidden_size % shape.num_heads:
            raise TrainerError(f"hidden size {shape.hidden_size} is not divisible by {shape.num_heads} heads")
        return shape


@dataclass
class PretrainEvent:
    kind: str  # "start" | "step" | "eval" | "sample" | "checkpoint" | "done"
    step: int
    total_steps: int
    loss: float | None = None
    held_out_loss: float | None = None
    unigram_baseline: float | None = None
    text: str = ""


@dataclass
class PretrainResult:
    model_dir: Path
    held_out_loss: float
    unigram_baseline: float
    steps: int
    seconds: float
    tokens_per_second: float
    num_parameters: int
    history: list[dict] = field(default_factory=list)  # {"step", "held_out_loss"} per evaluation


def run_dir(data_dir: Path, name: str) -> Path:
    """Where an unfinished pretraining run keeps its tokenizer, tokens and checkpoint."""
    return Path(data_dir) / "pretrain" / name


def _check_name(store: ModelStore, name: str) -> None:
    if not VALID_NAME.match(name):
        raise TrainerError(
            f"{name!r} is not a valid model name (letters, digits, '.', '_', '+', '-'; not starting with '.')"
        )
    if store.path_of(name).exists():
        raise TrainerError(f"model {name!r} already exists in the store; choose another --out")


def _prepare_run(settings: PretrainSettings, directory: Path, resume: bool, log: Callable[[str], None]) -> PretrainSettings:
    """Create the run directory (tokenizer, token stream, settings) or check the one to resume."""
    if resume:
        if not (directory / RUN_SETTINGS).exists():
            raise TrainerError(f"no pretraining run named {settings.out!r} to resume (looked in {directory})")
        saved = PretrainSettings(**json.loads((directory / RUN_SETTINGS).read_text()))
        # A resumed run keeps its corpus, tokenizer and shape; it may run longer or elsewhere.
        saved.steps, saved.device = settings.steps, settings.device
        return saved
    if directory.exists():
        raise TrainerError(
            f"a pretraining run named {settings.out!r} already exists in {directory}; "
            "pass --resume to continue it, or choose another --out"
        )
    settings.shape()  # validate before the slow steps
    docs = read_corpus(settings.data)
    log(f"corpus: {len(docs)} document(s), {sum(len(d.text) for d in docs):,} characters")
    tokenizer_bytes = train_tokenizer(docs, settings.vocab_size, settings.model_type)
    tokenizer = spm.SentencePieceProcessor(model_proto=tokenizer_bytes)
    tokens = tokenize_documents(tokenizer, docs)
    split_blocks(tokens, settings.shape().block_size)  # refuse a too-small corpus now
    log(f"tokenizer: {settings.model_type} sentencepiece, {tokenizer.vocab_size()} pieces; {len(tokens):,} tokens")
    # Build the run in a temporary directory so a failed start leaves nothing behind.
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, mode=0o700)
    (tmp / RUN_TOKENIZER).write_bytes(tokenizer_bytes)
    torch.save(tokens, tmp / RUN_TOKENS)
    (tmp / RUN_SETTINGS).write_text(json.dumps(asdict(settings), indent=2))
    os.replace(tmp, directory)
    return settings


def lr_factor(step: int, total: int) -> float:
    """Linear warm-up over the first 5% of steps (at most 200), then cosine down to 10%."""
    warmup = max(1, min(200, total // 20))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


class BatchOrder:
    """Which training rows each step reads: a fresh seeded permutation per epoch.

    A pure function of (seed, step), so a resumed run reads exactly the batches it would
    have read, with no data-loader state to save. Each process takes its own slice.
    """

    def __init__(self, num_rows: int, global_batch: int, seed: int) -> None:
        self.num_rows, self.global_batch, self.seed = num_rows, global_batch, seed
        self.steps_per_epoch = num_rows // global_batch
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def rows(self, step: int, process: int, num_processes: int) -> torch.Tensor:
        epoch, offset = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.num_rows, generator=generator)
        batch = self._order[offset * self.global_batch : (offset + 1) * self.global_batch]
        return batch[process::num_processes]


def _next_token_loss(model: torch.nn.Module, rows: torch.Tensor) -> torch.Tensor:
    logits = model(rows[:, :-1])  # (B, T, V)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))


@torch.no_grad()
def held_out_loss(model: torch.nn.Module, rows: torch.Tensor, accelerator, batch_size: int) -> float:
    """Mean next-token loss (nats) over `rows`, split across processes and reduced."""
    model.eval()
    mine = rows[accelerator.process_index :: accelerator.num_processes]
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # (sum of losses, tokens)
    for start in range(0, len(mine), batch_size):
        batch = mine[start : start + batch_size].to(accelerator.device)
        total[0] += float(_next_token_loss(model, batch)) * batch[:, 1:].numel()
        total[1] += batch[:, 1:].numel()
    total = accelerator.reduce(total, reduction="sum")
    model.train()
    return float(total[0] / total[1])


@torch.no_grad()
def sample_text(
    model: torch.nn.Module,
    tokenizer: spm.SentencePieceProcessor,
    prompt_ids: list[int],
    max_new_tokens: int,
    context: int,
    seed: int,
    temperature: float = 0.8,
    top_k: int = 40,
) -> str:
    """A short continuation for the progress log (plain loop; the engine serves real chats)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    ids = list(prompt_ids)
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids[-context:]], device=device))[0, -1].float() / temperature
        threshold = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits[logits < threshold] = float("-inf")
        token = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
        if token == EOS_ID:
            break
        ids.append(token)
    model.train(was_training)
    return tokenizer.decode(ids)


def _save_checkpoint(accelerator, directory: Path, step: int) -> None:
    """Accelerate state (model, optimizer, scheduler, RNG) and the step, swapped in atomically."""
    tmp, final, old = directory / (RUN_CHECKPOINT + ".tmp"), directory / RUN_CHECKPOINT, directory / (RUN_CHECKPOINT + ".old")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=False)
    if accelerator.is_main_process:
        (tmp / RUN_PROGRESS).write_text(json.dumps({"step": step}))
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _latest_checkpoint(directory: Path) -> Path | None:
    for candidate in (directory / RUN_CHECKPOINT, directory / (RUN_CHECKPOINT + ".old")):
        if (candidate / RUN_PROGRESS).exists():
            return candidate
    return None


def model_config_for(shape: ModelShape, tokenizer: spm.SentencePieceProcessor) -> ModelConfig:
    return palm_config(
        vocab_size=tokenizer.vocab_size(),
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        max_position_embeddings=shape.block_size,
        bos_token_id=BOS_ID,
        # A reply ends at the template's end-of-turn marker as well as at </s>.
        eos_token_id=[EOS_ID, tokenizer.piece_to_id("<|end|>")],
    )


def save_to_store(
    store: ModelStore, name: str, model: PalmForCausalLM, tokenizer_bytes: bytes, info: dict, source: Path
) -> Path:
    """Write the model into the store as an ordinary model directory (atomically, by the store)."""
    tokenizer = Tokenizer.from_sentencepiece(
        tokenizer_bytes,
        special_tokens=list(CHAT_MARKERS),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        add_bos_token=True,
    )
    checkpoint = Checkpoint(
        config=model.config,
        tensors={k: v.detach().float().cpu().contiguous() for k, v in stored_tensors(model.state_dict(), model.config).items()},
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        source=source,
    )
    return store.write(checkpoint, name, {"source": "pretrained", **info})


def pretrain(
    settings: PretrainSettings,
    data_dir: Path,
    models_dir: Path,
    resume: bool = False,
    on_event: Callable[[PretrainEvent], None] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> PretrainResult:
    """Run (or resume) a pretraining run and write its model into the store at `models_dir`;
    the unfinished run lives under `data_dir`/pretrain/."""
    store = ModelStore(models_dir)
    _check_name(store, settings.out)
    if settings.steps < 1:
        raise TrainerError(f"--steps must be at least 1, got {settings.steps}")
    accelerator = make_accelerator(settings.device)
    emit = on_event if (on_event and accelerator.is_main_process) else (lambda event: None)
    say = log if accelerator.is_main_process else (lambda message: None)
    # The main process builds the run (tokenizer, tokens); the others read it. Its error,
    # if any, is broadcast so every process stops instead of waiting at a barrier.
    failure: list[str | None] = [None]
    if accelerator.is_main_process:
        try:
            settings = _prepare_run(settings, run_dir(data_dir, settings.out), resume, say)
        except TrainerError as exc:
            failure = [str(exc)]
    failure = broadcast_object_list(failure)
    if failure[0] is not None:
        raise TrainerError(failure[0])
    if not accelerator.is_main_process:
        settings = _prepare_run(settings, run_dir(data_dir, settings.out), True, say)
    directory = run_dir(data_dir, settings.out)
    shape = settings.shape()
    tokenizer_bytes = (directory / RUN_TOKENIZER).read_bytes()
    tokenizer = spm.SentencePieceProcessor(model_proto=tokenizer_bytes)
    tokens = torch.load(directory / RUN_TOKENS, weights_only=True)
    train_rows, held_rows = split_blocks(tokens, shape.block_size)
    baseline = unigram_baseline(train_rows, held_rows, tokenizer.vocab_size())
    eval_rows = held_rows[: settings.max_eval_rows]

    torch.manual_seed(settings.seed)
    config = model_config_for(shape, tokenizer)
    model = PalmForCausalLM(config)
    model.init_weights()
    num_parameters = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=shape.learning_rate,
        betas=(0.9, 0.95),
    )
    total = settings.steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    start_step = 0
    checkpoint = _latest_checkpoint(directory) if resume else None
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        start_step = json.loads((checkpoint / RUN_PROGRESS).read_text())["step"]
        say(f"resumed from step {start_step}")
    if start_step >= total:
        raise TrainerError(f"run {settings.out!r} already reached step {start_step}; pass a larger --steps")

    batch_per_process = max(1, min(shape.batch_size, len(train_rows) // accelerator.num_processes))
    order = BatchOrder(len(train_rows), batch_per_process * accelerator.num_processes, settings.seed)
    eval_every = settings.eval_every or max(1, total // 10)
    sample_every = eval_every if settings.sample_every == 0 else settings.sample_every
    emit(PretrainEvent("start", start_step, total, unigram_baseline=baseline, text=f"{num_parameters:,} parameters"))

    history: list[dict] = []
    started = time.perf_counter()
    tokens_seen = 0
    step = start_step
    model.train()
    try:
        while step < total:
            rows = train_rows[order.rows(step, accelerator.process_index, accelerator.num_processes)]
            rows = rows.to(accelerator.device)
            with accelerator.autocast():
                loss = _next_token_loss(model, rows)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += rows[:, 1:].numel() * accelerator.num_processes
            emit(PretrainEvent("step", step, total, loss=check_finite(loss, "training loss", step)))
            if step % eval_every == 0 and step < total:
                with accelerator.autocast():
                    value = held_out_loss(model, eval_rows, accelerator, shape.batch_size)
                history.append({"step": step, "held_out_loss": value})
                emit(PretrainEvent("eval", step, total, held_out_loss=value, unigram_baseline=baseline))
            if sample_every > 0 and step % sample_every == 0 and accelerator.is_main_process:
                prompt = held_rows[step % len(held_rows), :8].tolist()
                text = sample_text(accelerator.unwrap_model(model), tokenizer, prompt, 48, shape.block_size, step)
                emit(PretrainEvent("sample", step, total, text=text))
            if step % settings.checkpoint_every == 0 and step < total:
                _save_checkpoint(accelerator, directory, step)
                emit(PretrainEvent("checkpoint", step, total))
    except KeyboardInterrupt:
        if step > start_step:
            _save_checkpoint(accelerator, directory, step)
            say(f"interrupted: checkpoint saved at step {step}; continue with --resume")
        raise
    seconds = time.perf_counter() - started

    with accelerator.autocast():
        final = held_out_loss(model, held_rows, accelerator, shape.batch_size)
    history.append({"step": step, "held_out_loss": final})
    result = PretrainResult(
        model_dir=store.path_of(settings.out),
        held_out_loss=final,
        unigram_baseline=baseline,
        steps=step,
        seconds=seconds,
        tokens_per_second=tokens_seen / max(seconds, 1e-9),
        num_parameters=num_parameters,
        history=history,
    )
    if accelerator.is_main_process:
        info = {
            "corpus": str(Path(settings.data).resolve()),
            "settings": asdict(settings),
            "held_out_loss": final,
            "unigram_baseline": baseline,
            "steps": step,
            "train_seconds_this_session": seconds,
            "num_parameters": num_parameters,
            "history": history,
        }
        save_to_store(store, settings.out, accelerator.unwrap_model(model), tokenizer_bytes, info, directory)
        shutil.rmtree(directory, ignore_errors=True)  # finished: the model is in the store
    accelerator.wait_for_everyone()
    emit(PretrainEvent("done", step, total, held_out_loss=final, unigram_baseline=baseline))
    return result
