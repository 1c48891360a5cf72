"""Plots for the course notebooks (matplotlib). Every function returns its Figure.

Part 01 (toy models of superposition): features in 2-D, W^T W with the bias, the sparsity
sweep, feature dimensionality, the phase diagram, and neuron-model weights. Signed weights are
always drawn with `SIGNED_CMAP`, symmetric limits and a colour bar.
Part 02 (SAEs on toy models): each true feature's best decoder match, the L0-vs-reconstruction
frontier with feature recovery, dead latents during training, and one W_dec snapshot.
Part 04 (SAEs on a language model): training curves (the training monitor draws them too),
firing-density histograms, and the L0-vs-CE-gap frontier of a suite of SAEs.
Part 06 (steering): success against cost for every method, one panel per target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib.colors
import matplotlib.patches
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from sae_course import evaluation as ev
from sae_course import toy_models as tm

if TYPE_CHECKING:
    from sae_course.steering_eval import SteeringPoint
    from sae_course.training import TrainResult

# The one colormap for signed weights (and cosines) in every notebook: red positive, blue
# negative, white zero. Always drawn with symmetric limits (-vmax, vmax) and a colour bar.
SIGNED_CMAP = "RdBu_r"

# The fractions at which feature dimensionality clusters, and the geometry each reveals.
DIMENSIONALITY_FRACTIONS = {
    1.0: "1 (own dimension)",
    3 / 4: "3/4 (tetrahedron)",
    2 / 3: "2/3 (triangle)",
    1 / 2: "1/2 (antipodal pair)",
    2 / 5: "2/5 (pentagon)",
    1 / 3: "1/3",
}


def _np(x: Tensor | np.ndarray | Sequence) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def signed_limit(*values: Tensor | np.ndarray, floor: float = 0.0) -> float:
    """The symmetric colour limit for signed heat maps: the largest |value| (at least `floor`,
    and never 0, so a zero matrix still draws)."""
    vmax = max([floor] + [float(np.abs(_np(v)).max()) for v in values if np.size(_np(v))])
    return vmax if vmax > 0 else 1.0


def _grid(n: int, max_cols: int, size: float, height: float | None = None):
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, (height or size) * rows),
                             squeeze=False)
    flat = axes.ravel()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _titles(titles: Sequence[str] | None, n: int, default: str = "instance {}") -> list[str]:
    if titles is None:
        return [default.format(k) for k in range(n)]
    if len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} instances.")
    return list(titles)


def probability_titles(feature_probability: Tensor) -> list[str]:
    """'1-S = 0.05'-style titles from a per-instance probability table or vector."""
    p = _np(feature_probability)
    p = p.reshape(p.shape[0], -1)[:, 0]
    return [f"1-S = {v:.3g}" for v in p]


def plot_features_in_2d(
    W: Tensor,
    colors: Tensor | Sequence | None = None,
    titles: Sequence[str] | None = None,
    *,
    max_cols: int = 4,
    size: float = 2.3,
    suptitle: str | None = None,
) -> Figure:
    """One panel per instance: each feature's column W_i as a line from the origin.

    `colors`: per-feature values (e.g. importance, `[n_features]` or `[n_inst, n_features]`)
    mapped through viridis (yellow = most important), or a list of matplotlib colours.
    Expect orthogonal pairs when features are dense, antipodal pairs and pentagons when sparse.
    Panels are laid out in rows of `max_cols` (4 keeps the figure about 900 px wide, the width
    of a notebook in JupyterLab).
    """
    W = tm._weights(W)
    n_inst, d_hidden, n_features = W.shape
    if d_hidden != 2:
        raise ValueError(f"plot_features_in_2d needs d_hidden = 2, got {d_hidden}.")
    Wn = _np(W)
    if colors is None:
        cols = [["C0"] * n_features] * n_inst
    elif isinstance(colors, list | tuple) and colors and isinstance(colors[0], str):
        if len(colors) != n_features:
            raise ValueError(f"got {len(colors)} colours for {n_features} features.")
        cols = [list(colors)] * n_inst
    else:
        values = np.broadcast_to(_np(colors), (n_inst, n_features))
        lo, hi = values.min(), values.max()
        scaled = (values - lo) / (hi - lo) if hi > lo else np.ones_like(values)
        cmap = plt.get_cmap("viridis")
        cols = [[cmap(v) for v in row] for row in scaled]
    fig, axes = _grid(n_inst, max_cols, size)
    limit = max(1.5, float(np.abs(Wn).max()) * 1.1)
    for k, (ax, title) in enumerate(zip(axes, _titles(titles, n_inst), strict=True)):
        for i in range(n_features):
            x, y = Wn[k, 0, i], Wn[k, 1, i]
            ax.plot([0, x], [0, y], color=cols[k][i], lw=1.5)
            ax.scatter([x], [y], color=[cols[k][i]], s=18, zorder=3)
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.axhline(0, color="0.85", lw=0.6, zorder=0)
        ax.axvline(0, color="0.85", lw=0.6, zorder=0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_wtw(
    W: Tensor,
    b_final: Tensor | None = None,
    titles: Sequence[str] | None = None,
    *,
    max_cols: int = 4,
) -> Figure:
    """W^T W per instance (feature-feature overlaps, red/blue = positive/negative, one
    symmetric scale and colour bar for all panels) with the bias as a column beside it. A
    diagonal of ones and nothing else means no superposition; off-diagonal entries are
    interference."""
    W = tm._weights(W)
    n_inst, _, n_features = W.shape
    wtw = _np(torch.einsum("ihf,ihg->ifg", W, W))
    b = _np(b_final).reshape(n_inst, n_features) if b_final is not None else None
    cols = min(n_inst, max_cols)
    rows = math.ceil(n_inst / cols)
    width = 2.1 if n_features <= 10 else 2.3
    ratios = [8, 1] * cols if b is not None else [1] * cols
    fig, axes = plt.subplots(rows, len(ratios), figsize=(width * cols * 1.1, width * rows),
                             squeeze=False, gridspec_kw={"width_ratios": ratios})
    vmax = signed_limit(wtw, *([b] if b is not None else []), floor=1.0)
    step = 2 if b is not None else 1
    image = None
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        ax = axes[r, c * step]
        bax = axes[r, c * step + 1] if b is not None else None
        if k >= n_inst:
            ax.set_visible(False)
            if bax is not None:
                bax.set_visible(False)
            continue
        image = ax.imshow(wtw[k], cmap=SIGNED_CMAP, vmin=-vmax, vmax=vmax)
        ax.set_title(_titles(titles, n_inst)[k], fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if bax is not None:
            bax.imshow(b[k][:, None], cmap=SIGNED_CMAP, vmin=-vmax, vmax=vmax, aspect="auto")
            bax.set_xticks([0], ["b"])
            bax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="W^T W  |  b")
    return fig


def plot_sparsity_sweep(
    W: Tensor,
    feature_probability: Tensor,
    *,
    threshold: float = 0.5,
    importance: Tensor | None = None,
) -> Figure:
    """How superposition grows with sparsity, against 1/(1-S) = 1/p (log scale).

    Left: each feature's ||W_i|| (coloured by importance if given); the dashed line is the
    `threshold` for "represented". Right: the number of represented features and the
    hidden dimension.
    """
    W = tm._weights(W)
    n_inst, d_hidden, n_features = W.shape
    p = _np(feature_probability).reshape(n_inst, -1)[:, 0]
    x = 1 / p
    norms = _np(tm.feature_norms(W))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    colors = None
    if importance is not None:
        colors = np.broadcast_to(_np(importance), (n_inst, n_features))
    xs = np.repeat(x[:, None], n_features, axis=1)
    if colors is None:
        ax1.scatter(xs.ravel(), norms.ravel(), s=10, alpha=0.7)
    else:
        sc = ax1.scatter(xs.ravel(), norms.ravel(), s=10, alpha=0.7, c=colors.ravel(),
                         cmap="viridis")
        fig.colorbar(sc, ax=ax1, label="importance")
    ax1.axhline(threshold, color="k", ls="--", lw=0.8)
    ax1.set_xscale("log")
    ax1.set_xlabel("1 / (1 - S)  (= 1 / feature probability)")
    ax1.set_ylabel("||W_i||")
    ax1.set_title("feature norms")
    count = (norms > threshold).sum(1)
    ax2.plot(x, count, "o-", label="features represented")
    ax2.axhline(d_hidden, color="k", ls="--", lw=0.8, label=f"d_hidden = {d_hidden}")
    ax2.set_xscale("log")
    ax2.set_ylim(0, n_features + 0.5)
    ax2.set_xlabel("1 / (1 - S)")
    ax2.set_ylabel("count")
    ax2.set_title(f"represented features (||W_i|| > {threshold})")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_feature_dimensionality(
    W: Tensor,
    feature_probability: Tensor,
    *,
    jitter: float = 0.04,
    seed: int = 0,
) -> Figure:
    """Each feature's dimensionality D_i against 1/(1-S), with horizontal lines at the
    fractions 1, 3/4, 2/3, 1/2, 2/5, 1/3 where the points cluster (each fraction is a
    geometry), and the line d_hidden / (number of represented features): the dimensions each
    represented feature gets on average (`toy_models.dimensions_per_feature`)."""
    W = tm._weights(W)
    n_inst, _, n_features = W.shape
    p = _np(feature_probability).reshape(n_inst, -1)[:, 0]
    x = 1 / p
    dims = _np(tm.feature_dimensionality(W))
    rng = np.random.default_rng(seed)
    xs = np.repeat(x[:, None], n_features, axis=1) * np.exp(
        rng.uniform(-jitter, jitter, size=dims.shape))
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    for frac, label in DIMENSIONALITY_FRACTIONS.items():
        ax.axhline(frac, color="0.7", lw=0.8, ls=":")
        ax.text(x.max() * 1.15, frac, label, va="center", fontsize=8, color="0.35")
    ax.scatter(xs.ravel(), dims.ravel(), s=8, alpha=0.5, color="C0", label="D_i (per feature)")
    ax.plot(x, _np(tm.dimensions_per_feature(W)), "k-", lw=1.2,
            label="d_hidden / features represented (dimensions per feature)")
    ax.set_xscale("log")
    ax.set_xlim(x.min() / 1.2, x.max() * 3)
    ax.set_ylim(-0.05, 1.15)
    ax.set_xlabel("1 / (1 - S)  (= 1 / feature probability)")
    ax.set_ylabel("dimensionality")
    ax.set_title("feature dimensionality")
    ax.legend(loc="upper center", fontsize=8)
    fig.tight_layout()
    return fig


def plot_phase_diagram(
    regimes: Tensor,
    densities: Tensor | Sequence[float],
    relative_importances: Tensor | Sequence[float],
    *,
    n_stuck: Tensor | None = None,
) -> Figure:
    """The paper's phase diagram: the regime of the extra feature (`regimes`
    `[n_importances, n_densities]`, values 0/1/2 as `toy_models.extra_feature_regime`) against
    feature density 1-S (x, log, dense on the left) and relative importance (y, log). With
    `n_stuck` (same shape) each cell shows how many of its starts ended at a higher loss."""
    reg = _np(regimes)
    dens, imps = _np(densities), _np(relative_importances)
    if reg.shape != (len(imps), len(dens)):
        raise ValueError(f"regimes has shape {reg.shape}; expected (n_importances, n_densities) "
                         f"= {(len(imps), len(dens))}.")
    colors = ["#d9d9d9", "#4c72b0", "#dd8452"]
    cmap = matplotlib.colors.ListedColormap(colors)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.imshow(reg, cmap=cmap, vmin=-0.5, vmax=2.5, origin="lower", aspect="auto")
    ax.set_xticks(range(len(dens)), [f"{d:.2g}" for d in dens])
    ax.set_yticks(range(len(imps)), [f"{r:.2g}" for r in imps])
    ax.set_xlabel("feature density 1 - S (both features)")
    ax.set_ylabel("relative importance of the extra feature")
    if n_stuck is not None:
        for (i, j), v in np.ndenumerate(_np(n_stuck)):
            if v:
                ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=7, color="k")
    handles = [matplotlib.patches.Patch(color=c, label=label)
               for c, label in zip(colors, tm.EXTRA_FEATURE_REGIMES, strict=True)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8,
              title="extra feature", title_fontsize=8)
    ax.set_title("2 features in 1 dimension: where the extra feature goes", fontsize=10)
    fig.tight_layout()
    return fig


def plot_neuron_weights(
    W: Tensor,
    titles: Sequence[str] | None = None,
    *,
    max_cols: int = 3,
) -> Figure:
    """Neuron model weights, one panel per instance: rows are neurons, columns features
    (red positive, blue negative; each panel has its own symmetric scale, set by its largest
    positive weight, and its own colour bar). A neuron with one strong red cell is
    monosemantic; several red cells, polysemantic."""
    W = tm._weights(W)
    n_inst, d_hidden, n_features = W.shape
    Wn = _np(W)
    fig, axes = _grid(n_inst, max_cols, 0.22 * n_features + 1.0, 0.22 * d_hidden + 1.1)
    for k, (ax, title) in enumerate(zip(axes, _titles(titles, n_inst), strict=True)):
        # scale by the largest positive weight: what drives a neuron is what matters here;
        # large negative weights (which keep a neuron off) saturate in blue
        vmax = float(Wn[k].max()) if Wn[k].max() > 0 else float(np.abs(Wn[k]).max()) or 1.0
        image = ax.imshow(Wn[k], cmap=SIGNED_CMAP, vmin=-vmax, vmax=vmax)
        fig.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("feature", fontsize=8)
        ax.set_ylabel("neuron", fontsize=8)
        ax.set_xticks(range(n_features))
        ax.set_yticks(range(d_hidden))
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def plot_neuron_monosemanticity(
    monosemanticity: Tensor, feature_probability: Tensor
) -> Figure:
    """Share of each neuron's input weight on its top feature, against 1/(1-S)."""
    m = _np(monosemanticity)
    n_inst, d_hidden = m.shape
    x = 1 / _np(feature_probability).reshape(n_inst, -1)[:, 0]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(np.repeat(x[:, None], d_hidden, axis=1).ravel(), m.ravel(), s=14, alpha=0.6)
    ax.plot(x, m.mean(1), "k-", lw=1, label="mean over neurons")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("1 / (1 - S)")
    ax.set_ylabel("weight share of top feature")
    ax.set_title("monosemanticity of neurons (1 = one feature)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ Part 02: SAEs on toy models


def plot_best_cosines(
    true_features: Tensor,
    decoders: Mapping[str, Tensor],
    *,
    n_represented: int | None = None,
    threshold: float = ev.RECOVERED_COSINE,
) -> Figure:
    """Each true feature's best cosine with any decoder row, one line per SAE (`name -> W_dec`).

    Features are sorted by their norm (largest first, as represented by the toy model); with
    `n_represented` a dotted line marks where the features the toy model did not represent
    begin. The solid line is the `threshold` for "recovered"."""
    true_features = true_features.detach()
    order = torch.argsort(true_features.norm(dim=-1), descending=True)
    fig, ax = plt.subplots(figsize=(9, 3))
    for name, W_dec in decoders.items():
        cos = ev.best_cosines(true_features, W_dec.detach())[order]
        ax.plot(_np(cos), marker="o", ms=3, lw=1, label=name)
    if n_represented is not None:
        ax.axvline(n_represented - 0.5, color="grey", ls=":", label="not represented →")
    ax.axhline(threshold, color="k", lw=0.5)
    ax.set(xlabel="true feature (sorted by its norm in the toy model)", ylabel="best cosine",
           title="Each toy-model feature's best match among the decoder rows")
    ax.legend()
    return fig


def plot_frontier(
    frontier: Mapping[str, Sequence[Mapping[str, float]]],
    *,
    true_l0: float | None = None,
    n_features: int | None = None,
) -> Figure:
    """The L0-vs-reconstruction frontier (left) and L0 vs MMCS (right), one line per
    architecture. `frontier`: label -> the `evaluation.evaluate_sae` dicts of its sweep (keys
    "l0", "explained_variance", "mmcs"). `true_l0`, when known, is drawn as a dotted line.
    The figure is 9.2 in wide (about 920 px, JupyterLab's notebook width) with one legend for
    both panels below them, so its text keeps its size in the notebook."""
    fig, axes = plt.subplots(1, 2, figsize=(9.2, 4.2), layout="constrained")
    for label, points in frontier.items():
        l0 = [p["l0"] for p in points]
        axes[0].plot(l0, [p["explained_variance"] for p in points], marker="o", label=label)
        axes[1].plot(l0, [p["mmcs"] for p in points], marker="o", label=label)
    axes[0].set(xlabel="L0 (active latents per token)", ylabel="explained variance",
                title="Sparsity vs reconstruction")
    axes[1].set(xlabel="L0 (active latents per token)", ylabel="MMCS",
                title="Sparsity vs feature recovery")
    for ax in axes:
        if true_l0 is not None:
            ax.axvline(true_l0, color="grey", ls=":", lw=1)
    if frontier:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center",
                   ncol=min(len(frontier), 5), fontsize=9, frameon=False)
    known = f"{n_features} known features" if n_features is not None else "known features"
    title = f"All architectures on {known}"
    if true_l0 is not None:
        title += f" (dotted: the data's true L0 ≈ {true_l0:.1f})"
    fig.suptitle(title, fontsize=11)
    return fig


def plot_dead_latents(runs: Mapping[str, TrainResult]) -> Figure:
    """The dead-latent fraction (the training loop's tracker) against the step, one line per
    run (`label -> training.TrainResult`), e.g. with and without resampling."""
    fig, ax = plt.subplots(figsize=(7, 3))
    for label, result in runs.items():
        ax.plot(result.series("step"), result.series("dead_fraction"), label=label)
    ax.set(xlabel="step", ylabel="dead fraction (tracker)", title="Dead latents during training")
    ax.legend()
    return fig


def decoder_row_order(true_features: Tensor, W_dec: Tensor) -> Tensor:
    """Decoder rows grouped by the true feature each matches best (for `plot_decoder_snapshot`;
    pass the final snapshot so every frame of a training run uses the same order)."""
    return ev.cosine_matrix(true_features.detach().cpu(), W_dec.detach().cpu()).argmax(0).argsort()


def plot_decoder_snapshot(
    true_features: Tensor,
    W_dec: Tensor,
    *,
    row_order: Tensor | None = None,
    step: int | None = None,
    threshold: float = ev.RECOVERED_COSINE,
) -> Figure:
    """One decoder snapshot against the true features. Left: every feature's cosine with every
    decoder row (rows in `row_order`, by default grouped by their best feature); right: each
    feature's best cosine, with its MMCS and how many are recovered in the title. 9.2 in wide
    (about 920 px), the width of a notebook in JupyterLab."""
    cos = ev.cosine_matrix(true_features.detach().cpu(), W_dec.detach().cpu())
    if row_order is None:
        row_order = cos.argmax(0).argsort()
    fig, axes = plt.subplots(1, 2, figsize=(9.2, 3.6))
    image = axes[0].imshow(_np(cos[:, row_order]), cmap=SIGNED_CMAP, vmin=-1, vmax=1,
                           aspect="auto")
    fig.colorbar(image, ax=axes[0], label="cosine")
    axes[0].set(xlabel="decoder row", ylabel="true feature", title="cosine similarity")
    best = cos.max(-1).values
    axes[1].bar(range(len(best)), _np(best))
    axes[1].axhline(threshold, color="k", lw=0.5)
    prefix = f"step {step}: " if step is not None else ""
    axes[1].set(ylim=(0, 1.02), xlabel="true feature", ylabel="best cosine",
                title=f"{prefix}MMCS {float(best.mean()):.3f}, "
                      f"recovered {int((best > threshold).sum())}/{len(best)}")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- Part 04: language-model SAEs

TRAINING_PANELS = ("loss terms", "L0", "explained variance", "dead fraction")


def plot_training_curves(
    runs: Mapping[str, Sequence[Mapping[str, float]]],
    *,
    n_steps: int | None = None,
    notes: Mapping[str, str] | None = None,
) -> Figure:
    """One row per run (`label -> training log`, e.g. `TrainResult.history`): the loss terms
    (log scale, shared by every row so runs compare), L0 (log scale), explained variance and
    the dead fraction against the step. With `notes`, a last column shows `notes[label]`."""
    n = max(len(runs), 1)
    n_cols = 4 + bool(notes)
    ratios = [1, 1, 1, 1, 0.9][:n_cols]
    fig, axes = plt.subplots(n, n_cols, figsize=(3.1 * sum(ratios), 2.4 * n + 0.5),
                             squeeze=False, gridspec_kw={"width_ratios": ratios})
    for row, (label, history) in zip(axes, runs.items(), strict=False):
        steps = [h["step"] for h in history]
        terms = sorted({k for h in history for k in h if k.startswith("loss_")})
        for term in ["loss", *terms]:
            ys = [h.get(term, float("nan")) for h in history]
            row[0].plot(steps, ys, lw=2.2 if term == "loss" else 1, alpha=0.6 if term == "loss"
                        else 1, label="total" if term == "loss" else term[len("loss_"):])
        row[1].plot(steps, [h["l0"] for h in history], color="C3")
        row[2].plot(steps, [h["explained_variance"] for h in history], color="C2")
        row[3].plot(steps, [h["dead_fraction"] for h in history], color="C7")
        if history:
            row[0].legend(fontsize=7, loc="upper right")
            row[0].set_yscale("log")
            row[1].set_yscale("log")
        row[2].set_ylim(-0.2, 1.02)
        row[3].set_ylim(-0.02, 1.02)
        if n > 1:
            row[0].set_ylabel(label, fontsize=10)
        else:
            fig.suptitle(label, fontsize=10)
        for ax in row[:4]:
            ax.set_xlabel("step", fontsize=8)
            if n_steps is not None:
                ax.set_xlim(0, n_steps)
        if notes:
            row[4].axis("off")
            row[4].text(0, 0.5, notes.get(label, ""), fontsize=9, va="center", family="monospace")
    for col in (0, 1):  # the same scale in every row, so runs compare at a glance
        lows = [ax.get_ylim()[0] for ax in axes[:, col]]
        highs = [ax.get_ylim()[1] for ax in axes[:, col]]
        for ax in axes[:, col]:
            ax.set_ylim(min(lows), max(highs))
    for ax, title in zip(axes[0], TRAINING_PANELS, strict=False):
        ax.set_title(title, fontsize=10)
    if notes:
        axes[0, 4].set_title("evaluated in the model", fontsize=10)
    fig.tight_layout()
    return fig


def plot_density_histograms(
    log10_densities: Mapping[str, Tensor], *, window_tokens: int | None = None
) -> Figure:
    """Histograms of log10(firing density + 1e-10), one per SAE (`label -> [d_sae]`), on one
    axis. Dead latents sit at -10; the dotted line marks the dense threshold (10%)."""
    fig, ax = plt.subplots(figsize=(8, 3.4))
    bins = np.linspace(-10.2, 0.2, 53)
    for label, values in log10_densities.items():
        ax.hist(_np(values), bins=bins, alpha=0.6, label=label)
    ax.axvline(math.log10(ev.DENSE_FIRING_FRACTION), color="k", ls=":", lw=1)
    ax.text(math.log10(ev.DENSE_FIRING_FRACTION) + 0.05, ax.get_ylim()[1] * 0.9, "dense",
            fontsize=8)
    ax.text(-10, ax.get_ylim()[1] * 0.9, "dead", fontsize=8)
    window = f" (dead = no activation in {window_tokens:,} tokens)" if window_tokens else ""
    ax.set(xlabel="log10(firing density + 1e-10)", ylabel="latents",
           title=f"Firing density of each latent{window}")
    ax.legend(fontsize=8)
    return fig


def plot_ce_frontier(
    groups: Mapping[str, Sequence[Mapping[str, float]]], *, annotate: str | None = None
) -> Figure:
    """L0 against the CE gap (left) and against explained variance (right), one marker style
    per group (`label -> points` with keys "l0", "ce_gap", "explained_variance"); points of a
    group are joined in L0 order. `annotate`: a key whose value is written by each point."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    written: set[str] = set()
    placed: list[float] = []
    for i, (label, points) in enumerate(groups.items()):
        pts = sorted(points, key=lambda p: (p["l0"], p.get("d_sae", 0)))
        xs = [p["l0"] for p in pts]
        style = dict(marker="os^vDP*X"[i % 8], label=label, ls="-" if len(pts) > 1 else "")
        axes[0].plot(xs, [p["ce_gap"] for p in pts], **style)
        axes[1].plot(xs, [p["explained_variance"] for p in pts], **style)
        if annotate:
            for p in pts:
                if annotate in p and str(p[annotate]) not in written:
                    written.add(str(p[annotate]))
                    left = placed.count(p["l0"]) % 2  # alternate sides where L0 is shared
                    placed.append(p["l0"])
                    axes[0].annotate(str(p[annotate]), (p["l0"], p["ce_gap"]), fontsize=7,
                                     textcoords="offset points", xytext=(-5 if left else 5, 3),
                                     ha="right" if left else "left")
    axes[0].set(xscale="log", yscale="log", xlabel="L0 (active latents per token)",
                ylabel="CE gap (nats per token)", title="Sparsity vs cost in the model")
    axes[1].set(xscale="log", xlabel="L0 (active latents per token)",
                ylabel="explained variance", title="Sparsity vs reconstruction")
    for ax in axes:
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=2))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_steering_curves(
    sweeps: Mapping[str, Sequence[SteeringPoint]], *, budget: float | None = None,
    labels: Mapping[str, str] | None = None, split: str = "test",
) -> Figure:
    """Success against CE increase, one panel per target (`"concept=target" -> points`),
    one line per method through its strengths in order, on the `split` prompts; a gray
    dashed line at the CE `budget`. The x axis is linear up to 0.01 nats and logarithmic
    beyond, so the cheap points near 0 and the costly ones both show. Methods keep one
    colour, marker and line style across panels."""
    labels = labels or {}
    methods = list(dict.fromkeys(p.method for points in sweeps.values() for p in points))
    n = len(sweeps)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    height = 2.7 * rows + 0.5
    fig, axes = plt.subplots(rows, cols, figsize=(min(9.2, 3.1 * cols), height),
                             squeeze=False, sharey=True)
    colours = plt.get_cmap("tab10")
    costs = [p.ce_increase for pts in sweeps.values() for p in pts if p.split == split]
    top, bottom = max(costs, default=1.0), min(costs, default=0.0)
    for ax, (key, points) in zip(axes.flat, sweeps.items(), strict=False):
        for i, method in enumerate(methods):
            pts = sorted((p for p in points if p.method == method and p.split == split),
                         key=lambda p: p.strength)
            if not pts:
                continue
            ax.plot([p.ce_increase for p in pts], [p.success for p in pts],
                    marker="os^vDPX*"[i % 8], ms=4, lw=1.2, color=colours(i % 10),
                    ls="-" if i % 2 == 0 else "--", label=labels.get(method, method),
                    zorder=3 + len(methods) - i)  # earlier methods on top: dashes show ties
        if budget is not None:
            ax.axvline(budget, color="0.4", lw=1.0, ls=":")
            ax.text(budget, 0.02, " budget", color="0.4", fontsize=7)
        ax.set_xscale("symlog", linthresh=0.01, linscale=0.5)
        ax.set_xlim(min(-0.004, 1.5 * bottom), max(top, budget or 0.0) * 1.5)
        ticks = [0.0] + [t for t in (0.01, 0.1, 1.0, 10.0) if t < max(top, 0.02) * 1.5]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("CE increase (nats)")
        ax.grid(alpha=0.3)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"success ({split} prompts)")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.5 / height, 1, 1))
    return fig
