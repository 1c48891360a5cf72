"""Labels on tokens: each token of a story gets the labels of the word it belongs to.

`labelled_tokens` aligns a story's word spans with a tokenizer's tokens through character
offsets; `feature_matrix` turns the label dicts into a [tokens, features] bool matrix of the
binary ground-truth features in `FEATURES` (story-level ones such as `topic=cooking` hold on
every token of a story; word-level ones such as `sentiment_word=positive` only on some).

`HIERARCHY` lists the parent/child pairs of those features (topic > subtopic > topical word;
entity_type > entity), the structure feature splitting and absorption are measured on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tokenizers
import torch

from sae_course.storyworld.grammar import DEFAULT_LABELS, POS_TAGS, Story
from sae_course.storyworld.vocabulary import (
    SENTIMENTS,
    SUBTOPICS,
    SUBTOPICS_OF,
    TENSES,
    TOPICS,
)
from sae_course.storyworld.world import ENTITY_TYPES, WORLD

BOS_TOKEN = "<|endoftext|>"
"""Beginning/end of text, as in GPT-2: it separates stories and starts every context."""

SPECIAL_LABELS: dict[str, Any] = {
    **DEFAULT_LABELS, "topic": None, "subtopic": None, "sentiment": None, "tense": None,
    "sentence": -1, "pos": "special", "special": True, "word": None,
}
"""The labels of a BOS token (and of any token outside every span)."""

STORY_FACTORS = ["topic", "subtopic", "sentiment", "tense"]
"""The story-level factors: the same on every token of a story."""
STORY_FACTOR_VALUES: dict[str, list[str]] = {
    "topic": TOPICS, "subtopic": SUBTOPICS, "sentiment": SENTIMENTS, "tense": TENSES,
}


def _encode(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets from a transformers fast tokenizer or a tokenizers one."""
    if isinstance(tokenizer, tokenizers.Tokenizer):
        enc = tokenizer.encode(text, add_special_tokens=False)
        return list(enc.ids), [tuple(o) for o in enc.offsets]
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                        verbose=False)  # a story may be longer than one context
    except (NotImplementedError, TypeError, ValueError) as err:
        raise TypeError(
            "labelled_tokens needs a fast tokenizer that returns offsets (a transformers "
            "PreTrainedTokenizerFast, or a tokenizers.Tokenizer); got "
            f"{type(tokenizer).__name__}."
        ) from err
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def bos_id(tokenizer: Any) -> int:
    """The id of `BOS_TOKEN` in a transformers or a tokenizers tokenizer."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None and hasattr(tokenizer, "token_to_id"):
        bos = tokenizer.token_to_id(BOS_TOKEN)
    if bos is None:
        raise ValueError(f"The tokenizer has no BOS token; expected {BOS_TOKEN!r}.")
    return int(bos)


def story_token_labels(story: Story, tokenizer: Any) -> tuple[list[int], list[dict[str, Any]]]:
    """Token ids of `story.text` (no BOS) and one label dict per token.

    Each token takes the labels of the span that covers most of its characters, a space
    counting with the word after it (a token such as `."` that covers two spans takes the
    first of equal counts; a lone space token takes the word it precedes)."""
    ids, offsets = _encode(tokenizer, story.text)
    owner = [-1] * len(story.text)
    prev_end = 0
    for i, s in enumerate(story.spans):
        owner[prev_end:s.end] = [i] * (s.end - prev_end)
        prev_end = s.end
    labels: list[dict[str, Any]] = []
    for start, end in offsets:
        counts: dict[int, int] = {}
        for j in owner[start:end]:
            if j >= 0:
                counts[j] = counts.get(j, 0) + 1
        if not counts:
            labels.append(dict(SPECIAL_LABELS, special=False))
            continue
        best = max(counts, key=lambda j: (counts[j], -j))
        span = story.spans[best]
        labels.append({**span.labels, "special": False, "word": span.text, "span": best})
    return ids, labels


def labelled_tokens(
    story: Story, tokenizer: Any, add_bos: bool = True
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Token ids of `story.text` and one label dict per token.

    Every dict has the word-level labels of `DEFAULT_LABELS`, the story-level factors
    (`STORY_FACTORS`), `special` (True only for BOS), `word` (the span's text) and `span`
    (the span's index in `story.spans`). With `add_bos` (default, as TransformerLens'
    `to_tokens` does) the first token is BOS.
    """
    ids, labels = story_token_labels(story, tokenizer)
    if add_bos:
        ids = [bos_id(tokenizer)] + ids
        labels = [dict(SPECIAL_LABELS)] + labels
    return torch.tensor(ids, dtype=torch.long), labels


def _feature_names() -> list[str]:
    names = [f"topic={t}" for t in TOPICS] + [f"subtopic={s}" for s in SUBTOPICS]
    names += [f"topic_word={t}" for t in TOPICS] + [f"subtopic_word={s}" for s in SUBTOPICS]
    names += [f"sentiment={s}" for s in SENTIMENTS] + [f"sentiment_word={s}" for s in SENTIMENTS]
    names += [f"tense={t}" for t in TENSES] + [f"verb_tense={t}" for t in TENSES]
    names += ["plural", "singular", "in_quote", "quote_mark", "in_list", "in_fact", "is_number",
              "is_entity"] + [f"entity_type={e}" for e in ENTITY_TYPES]
    names += [f"entity={n}" for n in WORLD.names[:20]]
    names += [f"pos={p}" for p in POS_TAGS] + ["special"]
    return names


FEATURES: list[str] = _feature_names()
"""The binary ground-truth features of `feature_matrix`, in column order. `entity=NAME` is
listed for the 20 most common characters; any `entity=NAME` of the world can be asked for."""


def _hierarchy() -> list[tuple[str, str]]:
    pairs = [(f"topic={t}", f"subtopic={s}") for t, subs in SUBTOPICS_OF.items() for s in subs]
    pairs += [(f"topic_word={t}", f"subtopic_word={s}")
              for t, subs in SUBTOPICS_OF.items() for s in subs]
    pairs += [("entity_type=character", f"entity={n}") for n in WORLD.names[:20]]
    return pairs


HIERARCHY: list[tuple[str, str]] = _hierarchy()
"""(parent, child) feature pairs: wherever the child holds, the parent holds too."""


def _is_known(name: str) -> bool:
    if name in FEATURES:
        return True
    key, eq, value = name.partition("=")
    return bool(eq) and key == "entity" and (value in WORLD.characters
                                             or value in WORLD.city_country)


def _feature_value(lab: dict[str, Any], name: str) -> bool:
    if name == "plural":
        return lab["plural"] is True
    if name == "singular":
        return lab["plural"] is False
    key, eq, value = name.partition("=")
    if eq:
        if key == "entity":
            return lab.get("is_entity", False) and lab.get(key) == value
        return lab.get(key) == value
    return bool(lab.get(key))


def feature_matrix(labels: Sequence[dict[str, Any]], features: Sequence[str] | None = None
                   ) -> torch.Tensor:
    """A [n_tokens, n_features] bool tensor of the binary features (default `FEATURES`)."""
    names = list(features) if features is not None else FEATURES
    unknown = [n for n in names if not _is_known(n)]
    if unknown:
        raise ValueError(f"Unknown features {unknown}; the known ones are in FEATURES "
                         "(and entity=<any character or city of the world>).")
    rows = [[_feature_value(lab, n) for n in names] for lab in labels]
    return torch.tensor(rows, dtype=torch.bool).reshape(len(labels), len(names))
