"""Text sources and contexts: BOS-led, fixed length, deterministic; clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from sae_course import text
from sae_course.models import load_model


@pytest.fixture(scope="module")
def model():
    return load_model("offline", device="cpu")


def test_pack_contexts_bos_length_and_order():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    contexts = text.pack_contexts(docs, context_len=4, bos_id=0)
    # stream: 1 2 3 0 4 5 0 6 7 8 9 0 -> pieces of 3 -> BOS in front
    assert contexts.tolist() == [[0, 1, 2, 3], [0, 0, 4, 5], [0, 0, 6, 7], [0, 8, 9, 0]]
    assert contexts.dtype == torch.long


def test_pack_contexts_drops_partial_piece_and_rejects_tiny_context():
    assert text.pack_contexts([[1, 2]], context_len=8, bos_id=0).shape == (0, 8)
    with pytest.raises(ValueError, match="context_len must be at least 2"):
        text.pack_contexts([[1, 2]], context_len=1, bos_id=0)


def test_storyworld_contexts_start_with_bos_and_are_deterministic(model):
    a = text.contexts_for_model(model, 20, context_len=32, seed=3)
    b = text.contexts_for_model(model, 20, context_len=32, seed=3)
    c = text.contexts_for_model(model, 20, context_len=32, seed=4)
    assert a.shape == (20, 32)
    assert (a[:, 0] == model.tokenizer.bos_token_id).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_make_contexts_shuffles_by_seed(model):
    texts = text.load_texts("storyworld", 30, seed=0)
    plain = text.make_contexts(texts, model.tokenizer, 16, shuffle=False)
    mixed = text.make_contexts(texts, model.tokenizer, 16, seed=1)
    assert not torch.equal(plain, mixed)
    assert sorted(map(tuple, plain.tolist())) == sorted(map(tuple, mixed.tolist()))


def test_folder_source(tmp_path, model):
    (tmp_path / "b.txt").write_text("Second file. " * 20, encoding="utf-8")
    (tmp_path / "a.txt").write_text("First file. " * 20, encoding="utf-8")
    (tmp_path / "empty.txt").write_text("  ", encoding="utf-8")
    texts = text.folder_texts(tmp_path)
    assert texts[0].startswith("First") and len(texts) == 2
    contexts = text.contexts_for_model(model, 5, 16, source="folder", folder=tmp_path)
    assert contexts.shape[1] == 16 and len(contexts) >= 1
    assert (contexts[:, 0] == model.tokenizer.bos_token_id).all()


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        text.folder_texts(tmp_path / "missing")
    with pytest.raises(ValueError, match="no non-empty .txt files"):
        text.folder_texts(tmp_path)


def test_unknown_source():
    with pytest.raises(ValueError, match="Unknown text source"):
        text.load_texts("wikipedia", 3)


def test_default_sources():
    assert text.default_source("gpt2") == "hf"
    assert text.default_source("offline") == "storyworld"
    assert text.DEFAULT_DATASET


def test_hf_source_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="Could not stream the dataset.*source='storyworld'"):
        next(iter(text.hf_texts()))


def test_auto_source_falls_back_to_storyworld_offline(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert text.auto_source("gpt2") == "storyworld"
    assert "using StoryWorld text instead" in capsys.readouterr().out
    assert text.auto_source("offline") == "storyworld"


def test_context_longer_than_the_model_is_refused(model):
    with pytest.raises(ValueError, match="longer than the model's context"):
        text.contexts_for_model(model, 2, context_len=model.cfg.n_ctx + 1)


def test_hf_source_streams_and_shuffles_by_seed(tmp_path, model):
    """The streaming path, on a local dataset folder (no hub needed)."""
    rows = [json.dumps({"text": f"Document number {i}. " * 5}) for i in range(40)]
    (tmp_path / "train.jsonl").write_text("\n".join(rows), encoding="utf-8")
    plain = list(text.hf_texts(str(tmp_path), n_texts=5))
    assert plain == [f"Document number {i}. " * 5 for i in range(5)]
    a = list(text.hf_texts(str(tmp_path), n_texts=5, seed=1, shuffle_buffer=40))
    b = list(text.hf_texts(str(tmp_path), n_texts=5, seed=1, shuffle_buffer=40))
    assert a == b and a != plain
    contexts = text.contexts_for_model(model, 4, 16, source="hf", dataset=str(tmp_path))
    assert contexts.shape == (4, 16) and (contexts[:, 0] == model.tokenizer.bos_token_id).all()
