"""Packed contexts with labels: the tokens the activation store harvests, and what each one is.

`labelled_contexts` packs StoryWorld stories into BOS-led contexts exactly as the activation
store does for the offline model (`sae_course.text.contexts_for_model` with source
"storyworld": the same story stream, the same packing, the same shuffle), and keeps, for every
token, the labels of the word it belongs to. So any later part can ask "which tokens carry
factor F" about the very tokens it trains or evaluates on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sae_course.storyworld.grammar import Story, generate_stories
from sae_course.storyworld.labels import (
    SPECIAL_LABELS,
    bos_id,
    feature_matrix,
    story_token_labels,
)

EVIDENCE: dict[str, Any] = {
    "topic": lambda lab: lab["topic_word"] is not None,
    "subtopic": lambda lab: lab["subtopic_word"] is not None,
    "sentiment": lambda lab: lab["sentiment_word"] is not None,
    "tense": lambda lab: lab["verb_tense"] is not None and not lab["in_quote"],
}
"""Which word shows each story-level factor (see `LabelledContexts.shown_mask`)."""

STORIES_PER_ROUND = 64
"""Stories are drawn in rounds of this many, each round from its own seed (`round_seed`)."""


def round_seed(seed: int, round_: int) -> int:
    """The story seed of round `round_` of the stream for `seed` (shared with `text`)."""
    return seed * 100_003 + round_


@dataclass
class LabelledContexts:
    """Token contexts and, aligned with them, every token's labels.

    tokens: [n, context_len] token ids, each context starting with BOS.
    labels: labels[i][j] is the label dict of tokens[i, j] (see `labelled_tokens`).
    story_index: [n, context_len] index into `stories` of each token's story (-1 for BOS).
    stories: the stories the contexts were cut from.
    """

    tokens: Tensor
    labels: list[list[dict[str, Any]]]
    story_index: Tensor
    stories: list[Story]

    def __len__(self) -> int:
        return len(self.tokens)

    def features(self, names: Sequence[str] | None = None) -> Tensor:
        """[n, context_len, n_features] bool matrix of binary features (see `feature_matrix`)."""
        flat = [lab for row in self.labels for lab in row]
        m = feature_matrix(flat, names)
        return m.reshape(*self.tokens.shape, m.shape[-1])

    def shown_mask(self, factor: str) -> Tensor:
        """[n, context_len] bool: True where an earlier token of the same context and story
        already showed the story-level `factor` (a topic or subtopic word, a sentiment word, a
        verb of the narration), so the model could know it there."""
        if factor not in EVIDENCE:
            raise ValueError(f"Unknown story factor {factor!r}: choose one of "
                             f"{', '.join(EVIDENCE)}.")
        shows = EVIDENCE[factor]
        out = torch.zeros(self.tokens.shape, dtype=torch.bool)
        for i, row in enumerate(self.labels):
            seen = -1  # the story whose factor has been shown in this context so far
            for j, lab in enumerate(row):
                story = int(self.story_index[i, j])
                out[i, j] = story >= 0 and seen == story
                if story >= 0 and shows(lab):
                    seen = story
        return out

    def label_values(self, key: str) -> list[list[Any]]:
        """The value of one label (e.g. "topic", "entity") at every token."""
        return [[lab.get(key) for lab in row] for row in self.labels]


def labelled_contexts(
    tokenizer: Any, n_contexts: int, context_len: int = 128, seed: int = 0
) -> LabelledContexts:
    """`n_contexts` shuffled BOS-led contexts of StoryWorld text with per-token labels.

    The tokens equal `text.contexts_for_model(model, n_contexts, context_len, seed,
    source="storyworld")` for a model with this tokenizer.
    """
    if context_len < 2:
        raise ValueError(f"context_len must be at least 2 (BOS plus a token), got {context_len}.")
    if n_contexts < 0:
        raise ValueError(f"n_contexts must be >= 0, got {n_contexts}.")
    bos = bos_id(tokenizer)
    bos_label = dict(SPECIAL_LABELS)
    ids: list[int] = []
    labels: list[dict[str, Any]] = []
    owner: list[int] = []
    stories: list[Story] = []
    need = n_contexts * (context_len - 1)
    round_ = 0
    while len(ids) < need:
        for story in generate_stories(STORIES_PER_ROUND, round_seed(seed, round_)):
            doc_ids, doc_labels = story_token_labels(story, tokenizer)
            ids += doc_ids + [bos]
            labels += doc_labels + [bos_label]
            owner += [len(stories)] * len(doc_ids) + [-1]
            stories.append(story)
        round_ += 1
    body = context_len - 1
    n = len(ids) // body
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_contexts]
    tokens = torch.tensor(ids[: n * body], dtype=torch.long).reshape(n, body)
    index = torch.tensor(owner[: n * body], dtype=torch.long).reshape(n, body)
    first = torch.full((len(order), 1), bos, dtype=torch.long)
    rows = [[bos_label] + labels[i * body:(i + 1) * body] for i in order.tolist()]
    return LabelledContexts(
        tokens=torch.cat([first, tokens[order]], dim=1),
        labels=rows,
        story_index=torch.cat([torch.full((len(order), 1), -1), index[order]], dim=1),
        stories=stories,
    )
