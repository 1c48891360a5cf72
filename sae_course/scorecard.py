"""The ground-truth scorecard: how well an SAE's latents match StoryWorld's known factors.

StoryWorld labels every token (`sae_course.storyworld.FEATURES`: topic, sentiment, tense,
quote marks, entities, parts of speech, ...), so an interpretation can be checked:

- `label_scores`: for every (latent, label) pair, treat "the latent fires" as a prediction of
  "the label holds" and measure precision, recall and F1 over every counted token;
- `best_latent_per_label` / `best_label_per_latent`: the best single match either way;
- `k_sparse_probe_accuracy`: how well the best k latents predict a label when combined by a
  logistic regression (SAEBench's sparse probing: latents ranked by the difference of their
  mean activation on positive and negative tokens of a training split, scored on held-out
  stories, classes balanced so chance is 0.5), beside the same probe on the raw residual
  stream, the ceiling of what the model linearly holds at that layer;
- `detection_score` and `LabelExplainer`: automated interpretability without a language model.
  The "explanation" of a latent is its best label on the training stories; it is scored by
  detection on held-out stories: does the label tell the latent's activating examples (top
  and quantile-sampled) from random non-activating tokens? Any object with the `Explainer`
  methods (for example one that asks an LLM) plugs into the same scoring.

Everything is computed on the tokens `LatentActivations` counts (BOS excluded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sae_course.features import Example, LatentActivations, make_example, quantile_examples
from sae_course.features import top_examples as top_examples_of
from sae_course.probing import fit_probe
from sae_course.settings import cpu_threads
from sae_course.storyworld.labels import feature_matrix

PROBE_KS = (1, 2, 5, 16)
"""The numbers of latents the k-sparse probes may use."""
SCORECARD_MAX_ITER = 50
"""L-BFGS iterations of each scorecard probe: held-out accuracy stops changing well before
(on near-separable labels the regularised loss keeps creeping down for hundreds more)."""
TEST_EVERY = 4
"""Held-out split: the stories whose index is a multiple of this (no story in both halves)."""


# --------------------------------------------------------------------------- label F1


def precision_recall_f1(fired: Tensor, label: Tensor) -> tuple[float, float, float]:
    """Precision, recall and F1 of the prediction "the label holds where the latent fires".

    fired, label: [n_tokens] bool. An empty prediction has precision 0; an empty label has
    recall 0; F1 is 0 when both precision and recall are.
    """
    fired, label = fired.bool(), label.bool()
    tp = float((fired & label).sum())
    n_fired, n_label = float(fired.sum()), float(label.sum())
    precision = tp / n_fired if n_fired else 0.0
    recall = tp / n_label if n_label else 0.0
    f1 = 2 * tp / (n_fired + n_label) if n_fired + n_label else 0.0
    return precision, recall, f1


@dataclass
class LabelScores:
    """precision, recall, f1: [d_sae, n_labels] for the labels `names`."""

    names: list[str]
    precision: Tensor
    recall: Tensor
    f1: Tensor
    n_positive: Tensor  # [n_labels] tokens where each label holds


def counted_features(contexts: Any, names: Sequence[str]) -> Tensor:
    """[n_contexts * context_len, n_labels] bool labels in flat order, False at BOS."""
    m = contexts.features(names)
    m[:, 0] = False
    return m.reshape(-1, len(names))


def label_scores(acts: LatentActivations, labels: Tensor, names: Sequence[str]) -> LabelScores:
    """Precision, recall and F1 of every latent as a predictor of every label.

    labels: [n_tokens, n_labels] bool in the flat order of `acts` (see `counted_features`).
    """
    if labels.shape[0] != acts.tokens.numel():
        raise ValueError(f"labels has {labels.shape[0]} rows but the activations cover "
                         f"{acts.tokens.numel()} tokens: build both from the same contexts.")
    tp = torch.sparse.mm(acts.fired_matrix(), labels.float())  # [d_sae, n_labels]
    n_fired = acts.firing_counts().float()[:, None]
    n_label = labels.float().sum(0)[None, :]
    precision = tp / n_fired.clamp_min(1)
    recall = tp / n_label.clamp_min(1)
    f1 = 2 * tp / (n_fired + n_label).clamp_min(1)
    return LabelScores(list(names), precision, recall, f1, n_label[0].long())


def best_latent_per_label(scores: LabelScores) -> tuple[Tensor, Tensor]:
    """(F1, latent) of the best single latent for every label."""
    return scores.f1.max(dim=0)


def best_label_per_latent(scores: LabelScores) -> tuple[Tensor, Tensor]:
    """(F1, label index) of the best label for every latent."""
    return scores.f1.max(dim=1)


# --------------------------------------------------------------------------- sparse probing


def split_rows(contexts: Any, test_every: int = TEST_EVERY) -> tuple[Tensor, Tensor]:
    """Flat token positions of the training and the held-out stories (BOS excluded)."""
    story = contexts.story_index.reshape(-1)
    counted = story >= 0
    test = counted & (story % test_every == 0)
    return (counted & ~test).nonzero()[:, 0], test.nonzero()[:, 0]


def balanced_rows(rows: Tensor, label: Tensor, n_per_class: int, seed: int) -> Tensor:
    """Up to `n_per_class` positive and as many negative rows of `rows`, seeded."""
    gen = torch.Generator().manual_seed(seed)
    pos, neg = rows[label[rows]], rows[~label[rows]]
    n = min(n_per_class, len(pos), len(neg))
    pick = [pos[torch.randperm(len(pos), generator=gen)[:n]],
            neg[torch.randperm(len(neg), generator=gen)[:n]]]
    return torch.cat(pick)


def dense_rows(acts: LatentActivations, rows: Tensor) -> Tensor:
    """[len(rows), d_sae] the latents at these flat token positions."""
    where = torch.full((acts.tokens.numel(),), -1, dtype=torch.long)
    where[rows] = torch.arange(len(rows))
    cols = acts.entry_latents()
    slot = where[acts.rows]
    keep = slot >= 0
    out = torch.zeros(len(rows), acts.d_sae)
    out[slot[keep], cols[keep]] = acts.values[keep]
    return out


def rank_latents(x: Tensor, y: Tensor) -> Tensor:
    """Latent indices, best first, by |mean activation on positives - on negatives|."""
    diff = x[y].mean(0) - x[~y].mean(0)
    return torch.argsort(diff.abs(), descending=True, stable=True)


def k_sparse_probe_accuracy(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
                            k: int, max_iter: int = 200) -> float:
    """Held-out accuracy of a logistic regression on the k latents `rank_latents` picks."""
    chosen = rank_latents(x_train, y_train)[:k]
    probe = fit_probe(x_train[:, chosen], y_train.long(), n_classes=2, max_iter=max_iter)
    return probe.accuracy(x_test[:, chosen], y_test.long())


@dataclass
class LabelCard:
    """One row of the scorecard: how well the SAE captures one label."""

    label: str
    n_positive: int
    best_latent: int
    f1: float
    precision: float
    recall: float
    probe: dict[int, float] = field(default_factory=dict)  # k -> k-sparse probe accuracy
    residual_probe: float = float("nan")  # the same probe on the raw residual stream


def scorecard(acts: LatentActivations, contexts: Any, names: Sequence[str],
              residual: Tensor | None = None, ks: Sequence[int] = PROBE_KS,
              n_per_class: int = 500, min_positive: int = 20, seed: int = 0,
              progress: bool = True) -> list[LabelCard]:
    """The scorecard of an SAE over `contexts`, one `LabelCard` per label of `names` with at
    least `min_positive` positive and negative tokens in each split.

    The best latent is chosen on the training stories and its F1 is reported on the held-out
    ones (so a latent is not credited for fitting noise); the probes train on balanced
    training tokens and are scored on balanced held-out tokens. `residual` [n_contexts,
    context_len, d] (the activations the SAE reads) adds the raw-residual probe.
    """
    labels = counted_features(contexts, names)
    train, test = split_rows(contexts)
    acts_train, acts_test = acts.restrict(train), acts.restrict(test)
    lab_train = labels.clone()
    lab_train[test] = False
    lab_test = labels.clone()
    lab_test[train] = False
    scores_train = label_scores(acts_train, lab_train, names)
    scores_test = label_scores(acts_test, lab_test, names)
    flat_resid = None if residual is None else residual.reshape(-1, residual.shape[-1]).float()

    def card_of(j: int) -> LabelCard | None:
        pos = [int(labels[rows, j].sum()) for rows in (train, test)]
        neg = [len(train) - pos[0], len(test) - pos[1]]
        if min(*pos, *neg) < min_positive:  # too rare (or too common) to score
            return None
        best = int(scores_train.f1[:, j].argmax())
        card = LabelCard(names[j], int(labels[:, j].sum()), best,
                         float(scores_test.f1[best, j]), float(scores_test.precision[best, j]),
                         float(scores_test.recall[best, j]))
        rtr = balanced_rows(train, labels[:, j], n_per_class, seed + j)
        rte = balanced_rows(test, labels[:, j], n_per_class, seed + j + 100_000)
        x_tr, x_te = dense_rows(acts, rtr), dense_rows(acts, rte)
        y_tr, y_te = labels[rtr, j], labels[rte, j]
        card.probe = {k: k_sparse_probe_accuracy(x_tr, y_tr, x_te, y_te, k, SCORECARD_MAX_ITER)
                      for k in ks}
        if flat_resid is not None:
            probe = fit_probe(flat_resid[rtr], y_tr.long(), n_classes=2,
                              max_iter=SCORECARD_MAX_ITER)
            card.residual_probe = probe.accuracy(flat_resid[rte], y_te.long())
        return card

    with cpu_threads(1):  # hundreds of tiny fits, where extra threads only spin-wait
        cards = [card_of(j) for j in tqdm(range(len(names)), desc="scorecard",
                                          disable=not progress)]
    return [c for c in cards if c is not None]


def format_scorecard(cards: Sequence[LabelCard], ks: Sequence[int] = PROBE_KS) -> str:
    """The scorecard as a markdown table."""
    head = ("| label | tokens | best latent | F1 | precision | recall | "
            + " | ".join(f"probe k={k}" for k in ks) + " | residual probe |")
    rule = "|---" * (7 + len(ks)) + "|"
    rows = [f"| {c.label} | {c.n_positive} | {c.best_latent} | {c.f1:.2f} | {c.precision:.2f} "
            f"| {c.recall:.2f} | " + " | ".join(f"{c.probe[k]:.2f}" for k in ks)
            + f" | {c.residual_probe:.2f} |" for c in cards]
    return "\n".join([head, rule, *rows])


# --------------------------------------------------------------------------- detection


class Explainer(Protocol):
    """What automated interpretability needs: an explanation, and predictions from it."""

    def explain(self, latent: int, examples: list[Example]) -> str:
        """A short explanation of what makes `latent` fire, from its examples."""

    def predict(self, explanation: str, example: Example) -> bool:
        """Whether `explanation` says the latent fires on the example's focus token."""


class LabelExplainer:
    """Explains a latent by its best StoryWorld label (chosen on the training stories) and
    predicts that it fires wherever that label holds."""

    def __init__(self, scores: LabelScores, contexts: Any) -> None:
        self.scores = scores
        self.contexts = contexts

    def explain(self, latent: int, examples: list[Example]) -> str:
        return self.scores.names[int(self.scores.f1[latent].argmax())]

    def predict(self, explanation: str, example: Example) -> bool:
        return bool(feature_matrix([example.labels(self.contexts)], [explanation])[0, 0])


def detection_examples(acts: LatentActivations, latent: int, n_top: int = 5, n_bands: int = 4,
                       per_band: int = 5, n_random: int = 25, seed: int = 0,
                       window: tuple[int, int] = (12, 4)) -> tuple[list[Example], list[Example]]:
    """Activating examples (top ones and quantile-sampled ones) and random tokens where the
    latent is silent, as SAEBench's detection scoring draws them."""
    activating = top_examples_of(acts, latent, n_top, window)
    for band in quantile_examples(acts, latent, n_bands, per_band, seed, window).values():
        activating += band
    dense = acts.activations_of(latent)
    rows = ((dense == 0) & acts.counted).reshape(-1).nonzero()[:, 0]
    gen = torch.Generator().manual_seed(seed + 1)
    pick = rows[torch.randperm(len(rows), generator=gen)[:n_random]]
    L = acts.context_len
    quiet = [make_example(acts, latent, *divmod(int(r), L), window, dense) for r in pick]
    return activating, quiet


def detection_score(predict: Any, activating: Sequence[Example], silent: Sequence[Example]
                    ) -> float:
    """Balanced accuracy of `predict(example) -> bool` at telling activating examples from
    silent ones: the mean of the hit rate on the first and the correct-rejection rate on the
    second (0.5 is chance, 1 perfect)."""
    if not activating or not silent:
        raise ValueError("detection_score needs at least one activating and one silent example.")
    hits = sum(bool(predict(e)) for e in activating) / len(activating)
    rejections = sum(not predict(e) for e in silent) / len(silent)
    return (hits + rejections) / 2


def detection_scores(explainer: Explainer, acts_test: LatentActivations,
                     latents: Sequence[int], seed: int = 0, progress: bool = True
                     ) -> dict[int, tuple[str, float]]:
    """latent -> (explanation, detection score on `acts_test`, the held-out activations)."""
    out = {}
    for latent in tqdm(list(latents), desc="detection", disable=not progress):
        activating, silent = detection_examples(acts_test, latent, seed=seed)
        if not activating:
            continue
        explanation = explainer.explain(latent, activating)
        out[int(latent)] = (explanation, detection_score(
            lambda e, x=explanation: explainer.predict(x, e), activating, silent))
    return out
