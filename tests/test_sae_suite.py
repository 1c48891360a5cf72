"""The shipped SAE suite (never retrained here): files, loading, and the main SAE's floors."""

from __future__ import annotations

import pytest
import torch

from sae_course import activations as acts_lib
from sae_course import pretrained
from sae_course import text as text_lib
from sae_course.evaluation import evaluate_lm
from sae_course.models import load_model

FRESH_SEED = 30_000  # not the suite's training (10_000 + layer) or evaluation (20_000) seeds


def test_suite_files_are_small_safe_and_complete():
    files = [p for p in pretrained.SUITE_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 32e6
    assert not any(p.suffix in (".bin", ".pt", ".pth", ".pkl") for p in files)
    rows = pretrained.list_pretrained("storyworld-res")
    roles = {r.sae_id.split("/")[0] for r in rows}
    assert {f"blocks.{layer}.hook_resid_pre" for layer in range(4)} <= roles
    widths = {r.d_sae for r in rows if r.hook_name == "blocks.2.hook_resid_pre"
              and r.architecture == "topk"}
    assert len(widths) >= 4, widths
    assert any(r.architecture == "relu" for r in rows)
    for r in rows:
        folder = pretrained.SUITE_DIR / r.sae_id
        assert {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors"} <= {
            p.name for p in folder.iterdir()}


@pytest.fixture(scope="module")
def model():
    return load_model("offline", device="cpu")


def test_every_shipped_sae_loads_ready_to_use(model):
    for r in pretrained.list_pretrained("storyworld-res"):
        sae = pretrained.load_pretrained("storyworld-res", r.sae_id)
        assert not sae.training and sae.W_enc.dtype == torch.float32
        assert sae.cfg.extra["hook_name"] == r.hook_name
        assert sae.cfg.extra["model_name"] == "offline"
        assert sae.cfg.d_in == model.cfg.d_model


MAIN = "blocks.2.hook_resid_pre/topk-1536-k16"


def test_main_sae_meets_its_floors_on_fresh_text(model):
    """Parts 05-06 stand on this SAE: L0 <= 32, explained variance >= 0.95, CE gap <= 0.02
    nats on fresh text, and at most 1% dead latents over a window of about 200k tokens."""
    sae = pretrained.load_pretrained("storyworld-res", MAIN)
    tokens = text_lib.contexts_for_model(model, 1600, seed=FRESH_SEED, source="storyworld")
    ev = evaluate_lm(sae, model, tokens[:192], batch_size=32, progress=False)
    print(f"\n{ev}")
    assert ev.l0 <= 32
    assert ev.explained_variance >= 0.95
    assert ev.ce_gap <= 0.02
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    window = 0
    with torch.no_grad():
        for i in range(0, len(tokens), 100):
            x = acts_lib.flatten_activations(acts_lib.harvest(model, tokens[i:i + 100],
                                                              sae.cfg.extra["hook_name"]))
            fired += (sae.encode(x) > 0).sum(0)
            window += len(x)
    dead = int((fired == 0).sum())
    print(f"dead latents: {dead} of {sae.cfg.d_sae} over a window of {window:,} tokens")
    assert window > 200_000 and dead <= 0.01 * sae.cfg.d_sae
