"""StoryWorld: the generator, its labels, and the shipped offline model trained on it."""

from __future__ import annotations

import math
import os
import random
import re

import pytest
import tokenizers
import torch

from sae_course import storyworld as sw

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FRESH_SEED = 424_242  # not one of the training script's data seeds (1000, 2000, 3000 + seed)


# ----------------------------------------------------------------------------------------------
# The generator
# ----------------------------------------------------------------------------------------------


def test_same_seed_same_text_and_labels():
    a, b = sw.generate_story(7), sw.generate_story(7)
    assert a.text == b.text and a.factors == b.factors
    assert [(s.start, s.end, s.labels) for s in a.spans] == [
        (s.start, s.end, s.labels) for s in b.spans]
    assert sw.sample_texts(30, seed=3) == sw.sample_texts(30, seed=3)
    assert sw.sample_texts(30, seed=3) != sw.sample_texts(30, seed=4)
    rng = random.Random(5)
    assert sw.generate_story(rng).text != sw.generate_story(rng).text  # an rng advances


def test_factors_can_be_fixed_and_bad_ones_are_named():
    s = sw.generate_story(1, topic="sailing", sentiment="negative", tense="past", hero="Mara")
    assert (s.factors["topic"], s.factors["sentiment"], s.factors["tense"],
            s.factors["hero"]) == ("sailing", "negative", "past", "Mara")
    with pytest.raises(ValueError, match="topic"):
        sw.generate_story(1, topic="knitting")
    with pytest.raises(TypeError, match="random.Random"):
        sw.generate_story("seed")


def test_vocabulary_is_modest_and_topics_are_many():
    assert len(sw.TOPICS) >= 6
    words = {w.lower() for t in sw.sample_texts(2000, seed=11) for w in re.findall(r"[A-Za-z]+", t)}
    assert 300 <= len(words) <= 1500, len(words)


def test_spans_cover_the_text_exactly():
    for story in sw.generate_stories(200, seed=2):
        for span in story.spans:
            assert story.text[span.start:span.end] == span.text
        covered = {i for s in story.spans for i in range(s.start, s.end)}
        assert all(story.text[i] == " " for i in range(len(story.text)) if i not in covered)
        for span in story.spans:
            for key in ("topic", "sentiment", "tense"):
                assert span.labels[key] == story.factors[key]


def test_world_facts_are_stable_across_stories():
    world = sw.WORLD
    seen = {"is_in": 0, "job": 0, "home": 0, "pet": 0}
    names = "|".join(world.characters)
    for text in sw.sample_texts(1500, seed=9):
        for city, country in re.findall(r"(\w+) is in (\w+)\.", text):
            assert world.city_country[city] == country
            seen["is_in"] += 1
        for city, country in re.findall(r"(\w+), (?:a city )?in (\w+)", text):
            assert world.city_country[city] == country
        for name, job in re.findall(rf"\b({names}) (?:is|was) an? (\w+)", text):
            assert world.characters[name].job == job
            seen["job"] += 1
        for name, city in re.findall(rf"\b({names}) (?:lives|lived) in (\w+)", text):
            assert world.characters[name].city == city
            seen["home"] += 1
    for story in sw.generate_stories(1500, seed=10):
        hero = world.characters[story.factors["hero"]]
        for species, pet in re.findall(r"(?:has|had) an? (\w+) (?:called|named) (\w+)", story.text):
            assert (species, pet) == (hero.pet_species, hero.pet_name)
            seen["pet"] += 1
    assert min(seen.values()) > 50, seen
    assert sw.World.from_seed(0) == sw.WORLD
    assert sw.World.from_seed(1).characters != sw.WORLD.characters


def test_agreement_and_tense_in_the_labels():
    checked = 0
    for story in sw.generate_stories(300, seed=12):
        for span in story.spans:
            lab = span.labels
            word = span.text.lower()
            if lab["pos"] == "verb":
                tense = lab["verb_tense"]
                assert tense == (story.factors["tense"] if not lab["in_quote"] else "present")
                if lab["lemma"] == "be":
                    expected = {("present", False): "is", ("present", True): "are",
                                ("past", False): "was", ("past", True): "were"}
                    assert word == expected[tense, lab["plural"]]
                elif tense == "present":
                    third = {"have": "has"}.get(lab["lemma"]) or sw._third(lab["lemma"])
                    assert word == (lab["lemma"] if lab["plural"] else third)
                checked += 1
            if lab["pos"] == "noun" and lab["topic_word"] and lab["lemma"] != word:
                assert lab["plural"] is True  # a topic noun only changes form in the plural
    assert checked > 1000
    # Present-tense text says "the dogs run" / "the dog runs".
    text = " ".join(sw.sample_texts(300, seed=13, tense="present"))
    for _noun, plural in sw.TOPIC_DATA["cooking"].agents:
        assert not re.search(rf"\bthe {plural} (?:is|\w+s)\b", text.replace("The ", "the "))


def _quote_mask(text: str) -> list[bool]:
    mask, inside = [], False
    for ch in text:
        if ch == '"':
            mask.append(True)
            inside = not inside
        else:
            mask.append(inside)
    return mask


@pytest.fixture(scope="module")
def small_tokenizer():
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(sw.sample_texts(1000, seed=21), vocab_size=1024, min_frequency=2,
                            special_tokens=[sw.BOS_TOKEN], show_progress=False)
    return bpe._tokenizer


def _check_alignment(story: sw.Story, tokenizer, decode) -> int:
    ids, labels = sw.labelled_tokens(story, tokenizer)
    assert ids.dtype == torch.long and len(ids) == len(labels)
    assert labels[0]["special"] and ids[0].item() == sw._bos_id(tokenizer)
    quoted = _quote_mask(story.text)
    topic_hits = 0
    for i, lab in zip(ids[1:].tolist(), labels[1:], strict=True):
        piece = decode(i).strip()
        assert lab["topic"] == story.factors["topic"]
        if piece.isalpha():
            assert piece in lab["word"]  # the token is part of the word it is labelled with
            if piece.lower() in sw.TOPIC_OF_WORD and piece == lab["word"]:
                assert lab["topic_word"] == sw.TOPIC_OF_WORD[piece.lower()]
                topic_hits += 1
            if piece.lower() in sw.NUMBER_WORDS and piece == lab["word"]:
                assert lab["is_number"] and lab["number"] == sw.NUMBER_WORDS.index(piece.lower())
        if '"' in piece:
            assert lab["in_quote"]
    # Every token wholly inside a quotation is flagged, and none outside.
    if isinstance(tokenizer, tokenizers.Tokenizer):
        offsets = tokenizer.encode(story.text, add_special_tokens=False).offsets
    else:
        offsets = tokenizer(story.text, add_special_tokens=False,
                            return_offsets_mapping=True)["offset_mapping"]
    for (start, end), lab in zip(offsets, labels[1:], strict=True):
        chars = [quoted[c] for c in range(start, end) if story.text[c] != " "]
        if chars and all(chars):
            assert lab["in_quote"], story.text[start:end]
        if chars and not any(chars):
            assert not lab["in_quote"], story.text[start:end]
    return topic_hits


def test_labels_align_with_tokens(small_tokenizer):
    hits = 0
    for story in sw.generate_stories(100, seed=22):
        hits += _check_alignment(story, small_tokenizer, lambda i: small_tokenizer.decode([i]))
    assert hits > 150, hits
    quotes = [s for s in sw.generate_stories(100, seed=23) if s.factors["has_dialogue"]]
    assert quotes
    _, labels = sw.labelled_tokens(quotes[0], small_tokenizer)
    assert any(lab["in_quote"] for lab in labels) and any(lab["quote_mark"] for lab in labels)


def test_feature_matrix(small_tokenizer):
    story = sw.generate_story(31, topic="music", sentiment="positive", tense="past")
    _, labels = sw.labelled_tokens(story, small_tokenizer)
    m = sw.feature_matrix(labels)
    assert m.shape == (len(labels), len(sw.FEATURES)) and m.dtype == torch.bool
    col = {n: i for i, n in enumerate(sw.FEATURES)}
    assert m[1:, col["topic=music"]].all() and not m[0, col["topic=music"]]
    assert m[0, col["special"]] and not m[1:, col["special"]].any()
    assert m[:, col["topic_word=music"]].any() and not m[:, col["topic_word=space"]].any()
    assert not (m[:, col["plural"]] & m[:, col["singular"]]).any()
    with pytest.raises(ValueError, match="FEATURES"):
        sw.feature_matrix(labels, ["no_such_feature"])


def test_scoring_helpers():
    assert sw.classify_topic("The sailor hoisted the sails in the harbour.") == "sailing"
    assert sw.classify_topic("Nothing here.") is None
    assert sw.sentiment_score("a wonderful, lovely day") == 2
    assert sw.sentiment_score("an awful day") == -1
    story = sw.generate_story(3)
    prompt = sw.topic_prompt(story)
    assert story.text.startswith(prompt) and sw.topic_counts(prompt)[story.factors["topic"]] >= 2


# ----------------------------------------------------------------------------------------------
# The shipped model (never retrained here)
# ----------------------------------------------------------------------------------------------


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
    assert math.isfinite(loss) and loss < 0.6 * entropy


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
    chance = 1 / len(sw.TOPICS)
    print(f"\ntopic kept in {kept}/{n} greedy continuations ({kept / n:.2f}; chance {chance:.3f})")
    assert kept / n > 2 * chance


def test_loads_through_transformer_bridge_with_matching_tokens(shipped):
    from transformer_lens.model_bridge import TransformerBridge

    model, tok = shipped
    bridge = TransformerBridge.boot_transformers(str(sw.MODEL_DIR), device="cpu")
    bridge.enable_compatibility_mode()
    story = sw.generate_story(FRESH_SEED, topic="space")
    ids, labels = sw.labelled_tokens(story, tok)
    assert torch.equal(bridge.to_tokens(story.text)[0], ids)  # labels line up with TL's tokens
    logits, cache = bridge.run_with_cache(story.text)
    assert logits.shape == (1, len(ids), len(tok))
    assert "blocks.0.hook_resid_pre" in cache
    with torch.no_grad():
        hf = model(ids[None]).logits
    torch.testing.assert_close(logits.log_softmax(-1), hf.log_softmax(-1), atol=1e-3, rtol=0)
    _check_alignment(story, tok, lambda i: tok.decode([i]))
