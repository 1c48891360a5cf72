"""Linear probes: how well a factor can be read off activations by a logistic regression.

A probe is multinomial logistic regression fitted in torch (full-batch L-BFGS, a little L2,
inputs standardised on the training set). Its held-out accuracy is the ceiling an SAE latent is
compared with in Part 05: a latent that predicts a label worse than a probe on the raw residual
stream has not captured all the model knows about it.

`story_factor_probe_table` measures, for every story-level StoryWorld factor (topic, subtopic,
sentiment, tense) and every layer of the model's residual stream, the probe accuracy on
held-out stories (the train/test split is by story, so no story is in both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

PROBE_SEED = 555_001
"""The story seed of the probe table's contexts: not one of the training data's seeds."""


@dataclass
class LinearProbe:
    """A fitted multinomial logistic regression (on standardised inputs)."""

    weight: Tensor  # [d, n_classes]
    bias: Tensor  # [n_classes]
    mean: Tensor  # [d]
    std: Tensor  # [d]

    def logits(self, x: Tensor) -> Tensor:
        return ((x.float() - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, x: Tensor) -> Tensor:
        return self.logits(x).argmax(-1)

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        return float((self.predict(x) == y).float().mean())


def fit_probe(x: Tensor, y: Tensor, n_classes: int | None = None, l2: float = 1e-3,
              max_iter: int = 200) -> LinearProbe:
    """Fit a logistic-regression probe predicting class ids `y` [n] from `x` [n, d]."""
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"fit_probe needs x [n, d] and y [n]; got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}.")
    if len(x) == 0:
        raise ValueError("fit_probe needs at least one example.")
    x = x.detach().float()
    y = y.detach().long()
    n_classes = n_classes or int(y.max()) + 1
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LinearProbe(w.detach(), b.detach(), mean, std)


@torch.no_grad()
def residual_streams(model: Any, tokens: Tensor, batch_size: int = 32) -> tuple[list[str], Tensor]:
    """Names and [n_layers, batch, pos, d] residual streams of a Hugging Face GPT-2 model:
    the input of each block (TransformerLens' `blocks.L.hook_resid_pre`) and, last, the final
    hidden state after the final layer norm."""
    outs = []
    for i in range(0, len(tokens), batch_size):
        hidden = model(tokens[i:i + batch_size], output_hidden_states=True).hidden_states
        outs.append(torch.stack(hidden))
    n_layers = len(outs[0]) - 1
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)] + ["final (ln_f)"]
    return names, torch.cat(outs, dim=1)


@dataclass
class ProbeResult:
    """Held-out accuracy of one factor's probe at one layer."""

    factor: str
    layer: str
    accuracy: float
    chance: float
    n_train: int
    n_test: int
    tokens: str = "all"  # "all" tokens of a story, or only those "after shown" (see below)


def story_factor_probe_table(model: Any, tokenizer: Any, n_contexts: int = 160,
                             factors: Sequence[str] | None = None, seed: int = PROBE_SEED,
                             test_every: int = 4) -> list[ProbeResult]:
    """Probe accuracy of every story-level factor at every layer of a Hugging Face GPT-2
    model, on held-out stories, on all tokens and on the tokens after the factor was shown
    (see `probe_story_factors`)."""
    from sae_course.storyworld import labelled_contexts

    ctx = labelled_contexts(tokenizer, n_contexts, seed=seed)
    names, resid = residual_streams(model, ctx.tokens)
    return (probe_story_factors(resid, names, ctx, factors, test_every)
            + probe_story_factors(resid, names, ctx, factors, test_every, after_shown=True))


def probe_story_factors(resid: Tensor, layer_names: Sequence[str], contexts: Any,
                        factors: Sequence[str] | None = None, test_every: int = 4,
                        progress: bool = True, after_shown: bool = False) -> list[ProbeResult]:
    """Fit one probe per (story-level factor, layer) and score it on held-out stories.

    resid: [n_layers, n_contexts, context_len, d] residual streams of `contexts` (a
    `storyworld.LabelledContexts`). BOS positions are left out; a token's story goes to the test
    set when its index is a multiple of `test_every`, so no story is in both sets. Chance is the
    test share of the most common class. With `after_shown`, only tokens after the context has
    shown the factor (`LabelledContexts.shown_mask`) are used, for training and testing: there
    the factor is knowable, so the accuracy measures how linearly the model writes it.
    """
    from sae_course.storyworld import STORY_FACTOR_VALUES, STORY_FACTORS

    if resid.ndim != 4 or tuple(resid.shape[1:3]) != tuple(contexts.tokens.shape):
        raise ValueError(f"resid must be [n_layers, {contexts.tokens.shape[0]}, "
                         f"{contexts.tokens.shape[1]}, d] for these contexts, got "
                         f"{tuple(resid.shape)}.")
    if len(layer_names) != len(resid):
        raise ValueError(f"{len(layer_names)} layer names for {len(resid)} layers.")
    factors = list(factors or STORY_FACTORS)
    story = contexts.story_index.flatten()
    keep = story >= 0
    test = (story % test_every == 0) & keep
    train = keep & ~test
    flat_labels = [lab for row in contexts.labels for lab in row]
    results = []
    for factor in tqdm(factors, desc="probes", leave=False, disable=not progress):
        if after_shown:
            shown = contexts.shown_mask(factor).flatten()
            train_f, test_f = train & shown, test & shown
        else:
            train_f, test_f = train, test
        values = STORY_FACTOR_VALUES[factor]
        y = torch.tensor([values.index(lab[factor]) if lab[factor] is not None else -1
                          for lab in flat_labels])
        counts = torch.bincount(y[test_f], minlength=len(values))
        chance = float(counts.max() / counts.sum())
        for name, acts in zip(layer_names, resid, strict=True):
            x = acts.reshape(-1, acts.shape[-1]).cpu()
            probe = fit_probe(x[train_f], y[train_f], len(values))
            results.append(ProbeResult(factor, name, probe.accuracy(x[test_f], y[test_f]),
                                       chance, int(train_f.sum()), int(test_f.sum()),
                                       "after shown" if after_shown else "all"))
    return results


def format_probe_table(results: Sequence[ProbeResult]) -> str:
    """Factors as rows, layers as columns, as a Markdown table of held-out accuracies."""
    layers = list(dict.fromkeys(r.layer for r in results))
    keys = list(dict.fromkeys((r.factor, r.tokens) for r in results))
    acc = {(r.factor, r.tokens, r.layer): r for r in results}
    lines = ["| factor | tokens | chance | " + " | ".join(f"`{n}`" for n in layers) + " |",
             "|---|---|---|" + "---|" * len(layers)]
    for f, t in keys:
        first = acc[f, t, layers[0]]
        cells = " | ".join(f"{acc[f, t, n].accuracy:.3f}" for n in layers)
        lines.append(f"| {f} | {t} ({first.n_test:,}) | {first.chance:.3f} | {cells} |")
    lines.append("\nTokens: the number of test tokens in brackets. Every token of a story carries "
                 "its story's label (BOS excluded), so on *all* tokens the first ones, before "
                 "the story has shown the factor, cap the accuracy below 1; *after shown* keeps "
                 "only tokens that follow a word showing it in the same context.")
    return "\n".join(lines)
