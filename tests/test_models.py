"""Loading the models: the offline model, GPT-2 requested offline, auto's fallback, bad names."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from sae_course import models
from sae_course.models import ModelUnavailable, load_model, model_name_of


@pytest.fixture
def no_gpt2(monkeypatch):
    """Offline, with GPT-2 not in the cache (whatever this machine's cache holds)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "gpt2_in_cache", lambda: False)


def test_offline_model_loads_in_compatibility_mode():
    model = load_model("offline", device="cpu")
    assert model_name_of(model) == "offline"
    assert model.compatibility_mode
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    tokens = model.to_tokens("A short text.")
    assert tokens[0, 0].item() == model.tokenizer.bos_token_id
    logits = model(tokens)
    assert logits.shape == (1, tokens.shape[1], model.cfg.d_vocab)
    assert torch.isfinite(logits).all()


def test_default_name_comes_from_settings(monkeypatch):
    monkeypatch.setenv("SAE_COURSE_MODEL", "offline")
    assert model_name_of(load_model(device="cpu")) == "offline"


def test_gpt2_requested_offline_gives_one_clear_error(no_gpt2):
    with pytest.raises(ModelUnavailable) as info:
        load_model("gpt2", device="cpu")
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "not in the local Hugging Face cache" in message
    assert "model='offline'" in message  # the fix


def test_auto_falls_back_to_offline_visibly(no_gpt2, capsys):
    model = load_model("auto", device="cpu")
    assert model_name_of(model) == "offline"
    out = capsys.readouterr().out
    assert "GPT-2 is not available" in out and "offline StoryWorld model is used" in out


def test_auto_falls_back_when_hub_unreachable(monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(models, "gpt2_in_cache", lambda: False)
    monkeypatch.setattr(models, "gpt2_reachable", lambda timeout=0: False)
    assert model_name_of(load_model("auto", device="cpu")) == "offline"
    assert "cannot be reached" in capsys.readouterr().out


def test_unknown_model_name():
    with pytest.raises(ValueError, match="Unknown model 'gpt3'.*auto, gpt2, offline"):
        load_model("gpt3")


def test_missing_offline_model_folder(monkeypatch, tmp_path):
    monkeypatch.setattr("sae_course.storyworld.MODEL_DIR", tmp_path / "nowhere")
    with pytest.raises(ModelUnavailable, match="offline model is missing"):
        load_model("offline", device="cpu")


def test_random_gpt2_small_has_gpt2_small_shape():
    model = models.random_gpt2_small(seed=0)
    cfg = model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_vocab, cfg.n_ctx) == (
        12, 768, 12, 50257, 1024)
    assert sum(p.numel() for p in model.parameters()) > 120_000_000
    assert model.compatibility_mode and not model.training
    tokens = torch.tensor([[model.tokenizer.bos_token_id, 5, 6]])
    _, cache = model.run_with_cache(tokens, names_filter="blocks.11.hook_resid_post")
    assert cache["blocks.11.hook_resid_post"].shape == (1, 3, 768)


def test_cached_gpt2_loads_offline_and_auto_prefers_it(tmp_path):
    """GPT-2 in the local Hugging Face cache (faked with the offline model's files) loads with
    HF_HUB_OFFLINE=1 through boot_transformers("gpt2"), and "auto" picks it."""
    snapshot = tmp_path / "hub" / "models--gpt2" / "snapshots" / "0000"
    snapshot.mkdir(parents=True)
    for f in models.offline_model_dir().iterdir():
        if f.is_file():
            shutil.copy(f, snapshot / f.name)
    (tmp_path / "hub" / "models--gpt2" / "refs").mkdir()
    (tmp_path / "hub" / "models--gpt2" / "refs" / "main").write_text("0000")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    code = (
        "from sae_course.models import load_model, model_name_of\n"
        "print(model_name_of(load_model('auto', device='cpu')),"
        " model_name_of(load_model('gpt2', device='cpu')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "gpt2 gpt2"


def test_a_given_device_ignores_a_bad_device_variable(monkeypatch):
    monkeypatch.setenv("SAE_COURSE_DEVICE", "quantum")
    model = load_model("offline", device="cpu")
    assert str(model.cfg.device) == "cpu"
    with pytest.raises(ValueError, match="Unknown device 'quantum'"):
        load_model("offline")
