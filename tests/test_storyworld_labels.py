"""StoryWorld's labels on tokens, the feature matrix, the hierarchy and labelled contexts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import tokenizers
import torch

from sae_course import storyworld as sw
from sae_course import text as text_lib


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


@pytest.fixture(scope="module")
def shipped_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(sw.MODEL_DIR))


def check_alignment(story: sw.Story, tokenizer, decode) -> int:
    """Assert every token carries the labels of the word it is part of; count topic hits."""
    ids, labels = sw.labelled_tokens(story, tokenizer)
    assert ids.dtype == torch.long and len(ids) == len(labels)
    assert labels[0]["special"] and ids[0].item() == sw.bos_id(tokenizer)
    quoted = _quote_mask(story.text)
    topic_hits = 0
    for i, lab in zip(ids[1:].tolist(), labels[1:], strict=True):
        piece = decode(i).strip()
        assert lab["topic"] == story.factors["topic"]
        assert lab["subtopic"] == story.factors["subtopic"]
        if piece.isalpha():
            assert piece in lab["word"]  # the token is part of the word it is labelled with
            if piece.lower() in sw.TOPIC_OF_WORD and piece == lab["word"]:
                assert lab["topic_word"] == sw.TOPIC_OF_WORD[piece.lower()]
                topic_hits += 1
            if piece.lower() in sw.NUMBER_WORDS and piece == lab["word"]:
                assert lab["is_number"] and lab["number"] == sw.NUMBER_WORDS.index(piece.lower())
        if '"' in piece:
            assert lab["in_quote"]
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
        hits += check_alignment(story, small_tokenizer, lambda i: small_tokenizer.decode([i]))
    assert hits > 150, hits
    quotes = [s for s in sw.generate_stories(100, seed=23) if s.factors["has_dialogue"]]
    _, labels = sw.labelled_tokens(quotes[0], small_tokenizer)
    assert any(lab["in_quote"] for lab in labels) and any(lab["quote_mark"] for lab in labels)


def test_feature_matrix(small_tokenizer):
    story = sw.generate_story(31, topic="music", subtopic="rock", sentiment="positive",
                              tense="past", hero="Mara")
    _, labels = sw.labelled_tokens(story, small_tokenizer)
    m = sw.feature_matrix(labels)
    assert m.shape == (len(labels), len(sw.FEATURES)) and m.dtype == torch.bool
    col = {n: i for i, n in enumerate(sw.FEATURES)}
    assert m[1:, col["topic=music"]].all() and not m[0, col["topic=music"]]
    assert m[1:, col["subtopic=rock"]].all() and not m[:, col["subtopic=choir"]].any()
    assert m[0, col["special"]] and not m[1:, col["special"]].any()
    assert m[:, col["subtopic_word=rock"]].any() and not m[:, col["topic_word=space"]].any()
    assert m[:, col["entity=Mara"]].any()
    assert not (m[:, col["plural"]] & m[:, col["singular"]]).any()
    rare = sw.WORLD.names[-1]
    assert sw.feature_matrix(labels, [f"entity={rare}"]).shape == (len(labels), 1)
    with pytest.raises(ValueError, match="FEATURES"):
        sw.feature_matrix(labels, ["no_such_feature"])


def test_hierarchy_children_imply_parents(small_tokenizer):
    names = sorted({n for pair in sw.HIERARCHY for n in pair})
    col = {n: i for i, n in enumerate(names)}
    rows = []
    for story in sw.generate_stories(60, seed=24):
        rows.append(sw.feature_matrix(sw.labelled_tokens(story, small_tokenizer)[1], names))
    m = torch.cat(rows)
    for parent, child in sw.HIERARCHY:
        assert not (m[:, col[child]] & ~m[:, col[parent]]).any(), (parent, child)
    assert m[:, col["subtopic_word=baking"]].any()


def test_labelled_contexts_are_the_activation_stores_contexts(shipped_tokenizer):
    tok = shipped_tokenizer
    ctx = sw.labelled_contexts(tok, n_contexts=12, context_len=64, seed=5)
    model = SimpleNamespace(tokenizer=tok, cfg=SimpleNamespace(n_ctx=128))
    store = text_lib.contexts_for_model(model, 12, context_len=64, seed=5, source="storyworld")
    assert torch.equal(ctx.tokens, store)
    assert ctx.tokens.shape == (12, 64) and len(ctx.labels) == 12
    assert all(len(row) == 64 and row[0]["special"] for row in ctx.labels)
    feats = ctx.features(["special", "topic=cooking", "sentiment_word=positive"])
    assert feats.shape == (12, 64, 3)
    assert torch.equal(feats[..., 0], ctx.tokens == sw.bos_id(tok))
    # Each token's labels are those of its own story, at the right word.
    for i in range(12):
        for j in range(1, 64):
            k = int(ctx.story_index[i, j])
            lab = ctx.labels[i][j]
            if k < 0:
                assert lab["special"]
                continue
            story = ctx.stories[k]
            assert lab["topic"] == story.factors["topic"]
            piece = tok.decode([int(ctx.tokens[i, j])]).strip()
            if piece.isalpha():
                assert piece in lab["word"] and lab["word"] == story.spans[lab["span"]].text
    other = sw.labelled_contexts(tok, n_contexts=12, context_len=64, seed=6)
    assert not torch.equal(other.tokens, ctx.tokens)
    with pytest.raises(ValueError, match="context_len"):
        sw.labelled_contexts(tok, 2, context_len=1)


def test_shown_mask_marks_tokens_after_the_factor_is_shown(shipped_tokenizer):
    ctx = sw.labelled_contexts(shipped_tokenizer, n_contexts=6, context_len=96, seed=8)
    for factor, key in (("topic", "topic_word"), ("sentiment", "sentiment_word")):
        mask = ctx.shown_mask(factor)
        assert mask.any() and not mask[:, 0].any()
        for i in range(6):
            for j in range(96):
                story = int(ctx.story_index[i, j])
                earlier = [ctx.labels[i][t][key] for t in range(j)
                           if int(ctx.story_index[i, t]) == story]
                assert bool(mask[i, j]) == (story >= 0 and any(v is not None for v in earlier))
    with pytest.raises(ValueError, match="topic"):
        ctx.shown_mask("colour")
