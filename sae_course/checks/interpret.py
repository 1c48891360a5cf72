"""Checks for notebook 05, interpreting features against the ground truth.

The references are the library's: `features.top_positions`, `features.quantile_bands`,
`features.decoder_logits`, `scorecard.precision_recall_f1`, `scorecard.k_sparse_probe_accuracy`,
`scorecard.detection_score`, `splitting.match_latents`, `splitting.absorption_rate` and
`sae.matryoshka_prefix_mse`. Every check runs the learner's code on seeded inputs of its own,
with edge cases (ties, empty labels, latents that fire on the negative class), keeps copies
of the inputs and fails when they were changed in place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from sae_course import features as feat
from sae_course import scorecard as sc
from sae_course import splitting
from sae_course.checks.harness import (
    CheckFailed,
    call,
    compare,
    passed,
    require,
    same_kind,
    seeded_generator,
    unchanged,
)
from sae_course.features import Example
from sae_course.sae import matryoshka_prefix_mse


def _sparse_activations(seed: int, n: int = 5, L: int = 40, p: float = 0.15) -> Tensor:
    g = seeded_generator(seed)
    x = torch.rand(n, L, generator=g) * (torch.rand(n, L, generator=g) < p)
    x[:, 0] = 0
    return x


# ---------------------------------------------------------------- examples


def test_top_positions(top_positions: Callable) -> None:
    ex = "top_positions"
    ties = torch.zeros(2, 12)
    ties[0, 3] = ties[0, 9] = ties[1, 2] = 1.0  # three tied maxima; earlier first
    ties[1, 4] = 0.5
    crowd = torch.zeros(1, 30)
    crowd[0, 10:14] = torch.tensor([4.0, 5.0, 3.0, 2.0])  # one burst: only its peak counts
    crowd[0, 20] = 1.0
    cases = [(_sparse_activations(s), n, w) for s, n, w in ((0, 6, 3), (1, 10, 0), (2, 4, 8))]
    cases += [(ties, 3, 2), (ties, 4, 1), (crowd, 3, 4), (crowd, 2, 10),
              (torch.zeros(2, 5), 3, 1), (_sparse_activations(3).double(), 50, 2)]
    for acts, n, width in cases:
        before = acts.clone()
        got = call(ex, top_positions, acts, n, width)
        unchanged(ex, before, acts, "the activations")
        want = feat.top_positions(acts, n, width)
        try:
            got = [(int(c), int(p)) for c, p in got]
        except (TypeError, ValueError) as err:
            raise CheckFailed(f"{ex}: return a list of (context, position) pairs; got "
                              f"{got!r}.") from err
        if got == want:
            continue
        hint = ""
        if any(float(acts[c, p]) == 0 for c, p in got if 0 <= c < len(acts)):
            hint = " A silent token (activation 0) is never an example."
        elif len(got) > len(want):
            hint = (f" You returned {len(got)} positions where {len(want)} do not overlap: two "
                    f"tokens of one context at most {width} apart share a window.")
        raise CheckFailed(f"{ex}: with n={n}, width={width} on activations of shape "
                          f"{tuple(acts.shape)} you returned {got}, expected {want}.{hint}")
    passed(ex, "highest first, non-overlapping, ties to the earlier token, silent tokens "
               "skipped, inputs untouched (9 cases)")


def test_quantile_bands(quantile_bands: Callable) -> None:
    ex = "quantile_bands"
    g = seeded_generator(4)
    skewed = torch.rand(50, generator=g) ** 6  # most activations small: equal-width bands differ
    cases = [(skewed, 4), (torch.rand(13, generator=g), 3), (torch.tensor([2.0, 2.0, 1.0, 2.0]), 2),
             (torch.arange(10.0).flip(0), 5), (torch.rand(7, generator=g).double(), 1)]
    for values, n_bands in cases:
        before = values.clone()
        got = call(ex, quantile_bands, values, n_bands)
        unchanged(ex, before, values, "the activations")
        want = feat.quantile_bands(values, n_bands)
        widths = torch.clamp((values - values.min()) / (values.max() - values.min() + 1e-12)
                             * n_bands, max=n_bands - 1).long()
        compare(got, want, exercise=ex, what=f"the bands of {len(values)} values in {n_bands}",
                mistakes={"bands split the range of values into equal widths instead of "
                          "splitting the values into equal counts": widths,
                          "band 0 holds the largest values": n_bands - 1 - want})
    passed(ex, "equal-count bands, weakest first, ties in order (5 cases)")


def test_logit_lens(logit_lens: Callable) -> None:
    ex = "logit_lens"
    for seed, (d_sae, d, vocab, k) in enumerate(((12, 8, 30, 5), (6, 4, 9, 3), (20, 16, 50, 1))):
        g = seeded_generator(10 + seed)
        W_dec, W_U = torch.randn(d_sae, d, generator=g), torch.randn(d, vocab, generator=g)
        for latent in (0, d_sae - 1, seed + 2):
            kept = (W_dec.clone(), W_U.clone())
            got = call(ex, logit_lens, W_dec, W_U, latent, k)
            unchanged(ex, kept[0], W_dec, "W_dec")
            unchanged(ex, kept[1], W_U, "W_U")
            require(isinstance(got, tuple) and len(got) == 2, ex,
                    "return (top_ids, bottom_ids), two tensors of token ids.")
            logits = feat.decoder_logits(W_dec, W_U, latent)
            top, bottom = logits.topk(k).indices, (-logits).topk(k).indices
            compare(got[0], top, exercise=ex, what=f"top_ids of latent {latent}",
                    mistakes={"top and bottom are swapped": bottom,
                              "the tokens are ranked by |logit|":
                              logits.abs().topk(k).indices})
            compare(got[1], bottom, exercise=ex, what=f"bottom_ids of latent {latent}",
                    mistakes={"bottom_ids are the least positive of the top list, or the "
                              "top tokens reversed": top.flip(0)})
    passed(ex, "top and bottom token ids of W_dec[latent] @ W_U, inputs untouched (9 cases)")


# ---------------------------------------------------------------- ground truth


def test_precision_recall_f1(precision_recall_f1: Callable) -> None:
    ex = "precision_recall_f1"
    g = seeded_generator(5)
    cases = [(torch.rand(60, generator=g) < 0.3, torch.rand(60, generator=g) < 0.5),
             (torch.rand(25, generator=g) < 0.7, torch.rand(25, generator=g) < 0.1),
             (torch.zeros(8, dtype=torch.bool), torch.rand(8, generator=g) < 0.5),
             (torch.tensor([True, True, False]), torch.zeros(3, dtype=torch.bool)),
             (torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)),
             (torch.tensor([True, False, True, True]), torch.tensor([True, False, True, True]))]
    for fired, label in cases:
        kept = (fired.clone(), label.clone())
        got = call(ex, precision_recall_f1, fired, label)
        unchanged(ex, kept[0], fired, "fired")
        unchanged(ex, kept[1], label, "label")
        try:
            got = tuple(float(v) for v in got)
        except (TypeError, ValueError) as err:
            raise CheckFailed(f"{ex}: return three numbers (precision, recall, f1); got "
                              f"{got!r}.") from err
        want = sc.precision_recall_f1(fired, label)
        if len(got) != 3 or any(abs(a - b) > 1e-6 for a, b in zip(got, want, strict=True)):
            hint = ""
            if len(got) == 3 and abs(got[0] - want[1]) < 1e-6 and abs(got[1] - want[0]) < 1e-6:
                hint = " Precision and recall are swapped."
            elif len(got) == 3 and abs(got[2] - (want[0] + want[1]) / 2) < 1e-6:
                hint = " F1 is the harmonic mean of precision and recall, not their average."
            raise CheckFailed(f"{ex}: for {int(fired.sum())} fired and {int(label.sum())} "
                              f"labelled tokens of {len(fired)} you returned {got}, expected "
                              f"{tuple(round(v, 6) for v in want)}.{hint}")
    passed(ex, "precision, recall and F1 with empty predictions and labels (6 cases)")


def _probe_data(seed: int, n: int, d: int, informative: Mapping[int, float]
                ) -> tuple[Tensor, Tensor]:
    g = seeded_generator(seed)
    y = torch.rand(n, generator=g) < 0.5
    x = torch.rand(n, d, generator=g) * (torch.rand(n, d, generator=g) < 0.3)
    for j, sign in informative.items():  # sign < 0: the latent fires on the negative class
        fires = y if sign > 0 else ~y
        noisy = fires ^ (torch.rand(n, generator=g) < abs(sign))
        x[:, j] = noisy.float() * (1 + torch.rand(n, generator=g))
    return x, y


def test_k_sparse_probe(k_sparse_probe: Callable) -> None:
    ex = "k_sparse_probe"
    cases = [(0, 12, {3: 0.05, 8: -0.1}, 1), (1, 12, {3: 0.3, 8: -0.02, 5: 0.2}, 1),
             (2, 20, {1: 0.2, 17: -0.2, 9: 0.3}, 2), (3, 16, {0: 0.1, 15: -0.25}, 3)]
    for seed, d, informative, k in cases:
        x, y = _probe_data(seed, 600, d, informative)
        kept = (x.clone(), y.clone())
        got = call(ex, k_sparse_probe, x[:400], y[:400], x[400:], y[400:], k)
        unchanged(ex, kept[0], x, "the latents")
        unchanged(ex, kept[1], y, "the labels")
        want = sc.k_sparse_probe_accuracy(x[:400], y[:400], x[400:], y[400:], k)
        try:
            got = float(got)
        except (TypeError, ValueError) as err:
            raise CheckFailed(f"{ex}: return the held-out accuracy as a number; got "
                              f"{got!r}.") from err
        require(abs(got - want) < 1e-6, ex,
                f"with k={k} you returned accuracy {got:.4f}, expected {want:.4f}. Rank the "
                "latents on the training split by |mean on positives - mean on negatives| "
                "(a latent firing on the negative class is informative too), fit the probe on "
                "the k best columns of the training split, score it on the test split.")
    passed(ex, "latents ranked by |mean difference| on the training split, probe scored "
               "held out (4 cases, incl. latents of the negative class)")


def _examples(n: int, start: int = 0) -> list[Example]:
    return [Example(0, start + i, 1.0, [start + i], [1.0], 0) for i in range(n)]


def test_detection_score(detection_score: Callable) -> None:
    ex = "detection_score"
    cases = [(_examples(4), _examples(12, 100), lambda e: e.position % 2 == 0),
             (_examples(10), _examples(3, 100), lambda e: e.position < 7),
             (_examples(5), _examples(5, 100), lambda e: True),
             (_examples(6), _examples(20, 100), lambda e: e.position >= 104)]
    for activating, silent, predict in cases:
        kept = ([e.position for e in activating], [e.position for e in silent])
        got = call(ex, detection_score, predict, activating, silent)
        unchanged(ex, kept[0], [e.position for e in activating], "the activating examples")
        unchanged(ex, kept[1], [e.position for e in silent], "the silent examples")
        want = sc.detection_score(predict, activating, silent)
        pooled = (sum(bool(predict(e)) for e in activating)
                  + sum(not predict(e) for e in silent)) / (len(activating) + len(silent))
        try:
            got = float(got)
        except (TypeError, ValueError) as err:
            raise CheckFailed(f"{ex}: return the score as a number; got {got!r}.") from err
        hint = (" That is the plain accuracy over all examples: with more silent than "
                "activating examples it rewards predicting 'silent' everywhere; average the two "
                "rates instead." if abs(got - pooled) < 1e-9 else "")
        require(abs(got - want) < 1e-9, ex,
                f"with {len(activating)} activating and {len(silent)} silent examples you "
                f"returned {got:.4f}, expected {want:.4f}.{hint}")
    passed(ex, "balanced accuracy over unequal activating and silent sets (4 cases)")


# ---------------------------------------------------------------- splitting and absorption


def test_match_latents(match_latents: Callable) -> None:
    ex = "match_latents"
    for seed, (d_a, d_b, d) in enumerate(((8, 20, 6), (5, 5, 3), (30, 12, 10))):
        g = seeded_generator(20 + seed)
        W_a = torch.randn(d_a, d, generator=g) * torch.rand(d_a, 1, generator=g) * 3
        W_b = torch.randn(d_b, d, generator=g) * torch.rand(d_b, 1, generator=g) * 3
        W_b[0] = -W_a[0] * 2  # an anti-parallel row: cosine -1, not a match
        kept = (W_a.clone(), W_b.clone())
        got = call(ex, match_latents, W_a, W_b)
        unchanged(ex, kept[0], W_a, "W_a")
        unchanged(ex, kept[1], W_b, "W_b")
        require(isinstance(got, tuple) and len(got) == 2, ex,
                "return (best_cosine, index), two tensors with one entry per latent of W_a.")
        best, index = splitting.match_latents(W_a, W_b)
        raw = (W_a @ W_b.T).max(dim=1)
        absolute = splitting.decoder_cosines(W_a, W_b).abs().max(dim=1)
        compare(got[0], best, exercise=ex, what="best_cosine",
                mistakes={"the rows are not normalised (dot products, not cosines)": raw.values,
                          "the absolute cosine is used (an opposite direction is no match)":
                          absolute.values})
        compare(got[1], index, exercise=ex, what="index", atol=0,
                mistakes={"the rows are not normalised": raw.indices})
        same_kind(ex, got[0], best, "best_cosine")
    passed(ex, "cosines of normalised decoder rows, best match per latent, signs kept (3 cases)")


def test_absorption_rate(absorption_rate: Callable) -> None:
    ex = "absorption_rate"
    g = seeded_generator(6)
    cases = []
    for n in (40, 15, 200):
        holds = torch.rand(n, generator=g) < 0.4
        holds[0] = True
        parent = torch.rand(n, generator=g) < 0.5
        child = torch.rand(n, generator=g) < 0.5
        cases.append((parent, child, holds))
    cases.append((torch.ones(5, dtype=torch.bool), torch.ones(5, dtype=torch.bool),
                  torch.tensor([True, False, True, False, False])))
    for parent, child, holds in cases:
        kept = [t.clone() for t in (parent, child, holds)]
        got = call(ex, absorption_rate, parent, child, holds)
        for k_, t, name in zip(kept, (parent, child, holds),
                               ("parent_fires", "child_fires", "child_holds"), strict=True):
            unchanged(ex, k_, t, name)
        want = splitting.absorption_rate(parent, child, holds)
        try:
            got = tuple(float(v) for v in got)
        except (TypeError, ValueError) as err:
            raise CheckFailed(f"{ex}: return two numbers (parent_silent, absorbed); got "
                              f"{got!r}.") from err
        silent_all = float((holds & ~parent).sum()) / len(holds)
        hint = (" The rates are shares of the tokens where the child label holds, not of all "
                "tokens." if len(got) == 2 and abs(got[0] - silent_all) < 1e-9 else "")
        require(len(got) == 2 and all(abs(a - b) < 1e-9 for a, b in zip(got, want, strict=True)),
                ex, f"on {int(holds.sum())} child tokens you returned {got}, expected "
                    f"{want}.{hint}")
    passed(ex, "parent-silent and absorbed shares of the child's tokens (4 cases)")


def test_matryoshka_loss(matryoshka_loss: Callable) -> None:
    ex = "matryoshka_loss"
    for seed, (n, d_sae, d, prefixes) in enumerate((
            (16, 12, 5, [3, 6, 12]), (9, 8, 4, [8]), (20, 30, 6, [1, 10, 25, 30]))):
        g = seeded_generator(30 + seed)
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        latents = (torch.rand(n, d_sae, generator=g, dtype=torch.float64)
                   * (torch.rand(n, d_sae, generator=g) < 0.4)).requires_grad_()
        W_dec = torch.randn(d_sae, d, generator=g, dtype=torch.float64).requires_grad_()
        b_dec = torch.randn(d, generator=g, dtype=torch.float64).requires_grad_()
        kept = [t.detach().clone() for t in (x, latents, W_dec, b_dec)]
        got = call(ex, matryoshka_loss, x, latents, W_dec, b_dec, list(prefixes))
        for k_, t, name in zip(kept, (x, latents, W_dec, b_dec),
                               ("x", "latents", "W_dec", "b_dec"), strict=True):
            unchanged(ex, k_, t, name)
        full = (x - (latents @ W_dec + b_dec)).pow(2).sum(-1).mean()
        want = full + matryoshka_prefix_mse(x, latents, W_dec, b_dec, list(prefixes))
        no_bias = full + sum((x - latents[:, :m] @ W_dec[:m]).pow(2).sum(-1).mean()
                             for m in prefixes[:-1])
        mean_over = want / len(prefixes)
        compare(got, want, exercise=ex, what=f"the loss for prefixes {prefixes}",
                mistakes={"b_dec is left out of the prefix reconstructions": no_bias,
                          "the prefix errors are averaged instead of summed": mean_over,
                          "only the full dictionary is counted": full})
        require(isinstance(got, Tensor) and got.requires_grad, ex,
                "the loss has no gradient: compute it with torch operations on the inputs "
                "(no .detach(), .item() or torch.no_grad()).")
        grads = torch.autograd.grad(got, (latents, W_dec, b_dec))
        ref = torch.autograd.grad(want, (latents, W_dec, b_dec))
        for gl, gr, name in zip(grads, ref, ("latents", "W_dec", "b_dec"), strict=True):
            compare(gl, gr, exercise=ex, what=f"the gradient of your loss with respect to {name}")
        same_kind(ex, got, want, "the loss")
    passed(ex, "value and gradients of the summed prefix losses (3 cases)")


# ---------------------------------------------------------------- interpret before you look


def grade_guesses(guesses: Mapping[int, str], scores: sc.LabelScores) -> list[dict[str, Any]]:
    """Grade the learner's guess of each latent's label against the ground truth: prints, per
    latent, the F1 of the guessed label, the best label and its F1; a guess is right when its
    F1 is at least 80% of the best label's. Returns the rows."""
    rows = []
    for latent, guess in guesses.items():
        best_f1, best = scores.f1[int(latent)].max(dim=0)
        best_name = scores.names[int(best)]
        if guess not in scores.names:
            close = [n for n in scores.names if guess.split("=")[0] in n][:6]
            print(f"latent {latent}: {guess!r} is not a label; labels look like "
                  f"{', '.join(close or scores.names[:6])}")
            continue
        f1 = float(scores.f1[int(latent), scores.names.index(guess)])
        right = f1 >= 0.8 * float(best_f1) and f1 > 0
        rows.append({"latent": int(latent), "guess": guess, "guess_f1": f1,
                     "best": best_name, "best_f1": float(best_f1), "right": right})
        mark = "\N{CHECK MARK}" if right else "\N{BALLOT X}"
        print(f"{mark} latent {latent}: your guess {guess} has F1 {f1:.2f}; the best label is "
              f"{best_name} (F1 {float(best_f1):.2f})")
    return rows
