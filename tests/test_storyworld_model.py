"""The shipped offline model (never retrained here): files, loss, and its behavioural table."""

from __future__ import annotations

import math
import os
import random

import pytest
import torch

from sae_course import storyworld as sw
from sae_course.storyworld import behaviour
from tests.test_storyworld_labels import check_alignment

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FRESH_SEED = 424_242  # not one of the training script's data seeds (1000, 2000, 3000 + seed)


@pytest.fixture(scope="module")
def shipped():
    from transformers import AutoTokenizer, GPT2LMHeadModel

    if not (sw.MODEL_DIR / "model.safetensors").exists():
        pytest.fail(f"The offline model is missing from {sw.MODEL_DIR}; "
                    "train it with scripts/train_offline_model.py (see its MODEL_CARD.md).")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(sw.MODEL_DIR))
    model = GPT2LMHeadModel.from_pretrained(str(sw.MODEL_DIR)).eval()
    return model, tok


def test_model_files_are_small_and_safe():
    files = {f.name: f.stat().st_size for f in sw.MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "MODEL_CARD.md"} <= set(files)
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in files)
    assert sum(files.values()) < 20e6


def _fresh_contexts(tok, n_contexts: int = 24, n_positions: int = 128) -> torch.Tensor:
    bos = tok.bos_token_id
    rng, stream = random.Random(FRESH_SEED), []
    while len(stream) < n_contexts * (n_positions - 1):
        stream += [bos] + tok(sw.generate_story(rng).text, add_special_tokens=False)["input_ids"]
    body = torch.tensor(stream[:n_contexts * (n_positions - 1)]).view(n_contexts, -1)
    return torch.cat([torch.full((n_contexts, 1), bos), body], dim=1)


def test_model_loss_is_far_below_unigram_entropy(shipped):
    model, tok = shipped
    x = _fresh_contexts(tok)
    with torch.no_grad():
        logits = model(x).logits[:, :-1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             x[:, 1:].reshape(-1)).item()
    counts = torch.bincount(x[:, 1:].flatten()).double()
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * p.log()).sum())
    print(f"\nfresh-text loss {loss:.3f} nats/token, unigram entropy {entropy:.3f} nats/token "
          f"(ratio {loss / entropy:.3f})")
    assert math.isfinite(loss) and loss < 0.5 * entropy


def test_behavioural_table_meets_every_threshold(shipped):
    """One row per factor the course names; the model card shows the same table."""
    model, tok = shipped
    rows = behaviour.behaviour_table(model, tok, n_stories=200, max_pairs=250)
    print("\n" + behaviour.format_table(rows))
    assert {r.factor for r in rows} == set(behaviour.THRESHOLDS)
    assert all(r.n >= 40 for r in rows), [(r.factor, r.n) for r in rows]
    failed = [(r.factor, round(r.score, 3), r.threshold) for r in rows if not r.passed]
    assert not failed, f"below threshold: {failed}"


def test_minimal_pairs_differ_in_one_word_only():
    stories = sw.generate_stories(40, seed=FRESH_SEED)
    for factor in behaviour.MINIMAL_PAIR_FACTORS:
        pairs = behaviour.minimal_pairs(stories, factor, max_pairs=50)
        assert pairs, factor
        for true, swapped in pairs:
            a, b = true.split(" "), swapped.split(" ")
            assert len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) == 1


def test_fact_candidates_are_never_prefixes_of_each_other(shipped):
    _, tok = shipped
    for _relation, options, _truth in behaviour.fact_queries(
            sw.WORLD, sw.WORLD.names[:3], sw.WORLD.cities[:3]):
        ids = [tuple(tok(o, add_special_tokens=False)["input_ids"]) for o in options]
        for i, x in enumerate(ids):
            for j, y in enumerate(ids):
                assert i == j or x != y[:len(x)], (options[i], options[j])


def test_greedy_continuations_keep_the_topic(shipped):
    model, tok = shipped
    n, kept = 48, 0
    for i in range(n):
        story = sw.generate_story(FRESH_SEED + i)
        ids = torch.tensor([[tok.bos_token_id] + tok(sw.topic_prompt(story),
                                                     add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=30, do_sample=False,
                                 pad_token_id=tok.eos_token_id)
        text = tok.decode(out[0, ids.shape[1]:]).split(sw.BOS_TOKEN)[0]
        kept += sw.classify_topic(text) == story.factors["topic"]
    print(f"\ntopic kept in {kept}/{n} greedy continuations ({kept / n:.2f})")
    assert kept / n >= 0.9


def test_loads_through_transformer_bridge_with_matching_tokens(shipped):
    from transformer_lens.model_bridge import TransformerBridge

    model, tok = shipped
    bridge = TransformerBridge.boot_transformers(str(sw.MODEL_DIR), device="cpu")
    bridge.enable_compatibility_mode()
    story = sw.generate_story(FRESH_SEED, topic="space")
    ids, labels = sw.labelled_tokens(story, tok)
    ids = ids[:bridge.cfg.n_ctx]
    text = tok.decode(ids[1:])
    assert torch.equal(bridge.to_tokens(text)[0], ids)  # labels line up with TL's tokens
    logits, cache = bridge.run_with_cache(text)
    assert logits.shape == (1, len(ids), len(tok))
    assert "blocks.0.hook_resid_pre" in cache
    with torch.no_grad():
        hf = model(ids[None]).logits
    torch.testing.assert_close(logits.log_softmax(-1), hf.log_softmax(-1), atol=1e-3, rtol=0)
    check_alignment(story, tok, lambda i: tok.decode([i]))
