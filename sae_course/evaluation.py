"""How good is an SAE? The metrics of the course, with the definitions of COURSE.md.

- L0: mean number of non-zero latents per token.
- Explained variance: 1 - E||x - x_hat||^2 / E||x - E[x]||^2 over the evaluation tokens.
- Dead latent: no activation in the last N tokens (N reported with the number);
  dense latent: fires on more than 10% of tokens.
- Mean max cosine similarity (MMCS, toy and ground truth): for each true feature, the best
  cosine with any decoder row, averaged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from sae_course.sae import normalize_rows

DENSE_FIRING_FRACTION = 0.1
RECOVERED_COSINE = 0.9


def l0(latents: Tensor) -> Tensor:
    """Mean number of non-zero latents per token (latents [..., d_sae])."""
    return (latents != 0).float().sum(-1).mean()


def explained_variance(x: Tensor, x_hat: Tensor) -> Tensor:
    """1 - E||x - x_hat||^2 / E||x - E[x]||^2 over the tokens (rows) of x [n, d]."""
    x = x.reshape(-1, x.shape[-1]).double()
    x_hat = x_hat.reshape(-1, x_hat.shape[-1]).double()
    residual = (x - x_hat).pow(2).sum(-1).mean()
    variance = (x - x.mean(0)).pow(2).sum(-1).mean()
    return (1 - residual / variance.clamp_min(1e-30)).float()


def cosine_matrix(A: Tensor, B: Tensor) -> Tensor:
    """Cosine similarity of every row of A [n, d] with every row of B [m, d]: [n, m]."""
    return normalize_rows(A) @ normalize_rows(B).t()


def best_cosines(true_features: Tensor, W_dec: Tensor) -> Tensor:
    """For each true feature [n_features, d], its best cosine with any decoder row [d_sae, d]."""
    return cosine_matrix(true_features.to(W_dec.dtype), W_dec).max(dim=-1).values


def mean_max_cosine_similarity(true_features: Tensor, W_dec: Tensor) -> Tensor:
    """MMCS: the best cosine of each true feature with any decoder row, averaged."""
    return best_cosines(true_features, W_dec).mean()


def firing_frequency(latents: Tensor) -> Tensor:
    """Per latent, the fraction of tokens on which it is non-zero: [d_sae]."""
    return (latents.reshape(-1, latents.shape[-1]) != 0).float().mean(0)


def dead_fraction(latents: Tensor) -> Tensor:
    """Fraction of latents with no activation on any of these tokens (N = number of tokens)."""
    return (firing_frequency(latents) == 0).float().mean()


def dense_fraction(latents: Tensor, threshold: float = DENSE_FIRING_FRACTION) -> Tensor:
    """Fraction of latents that fire on more than `threshold` (10%) of the tokens."""
    return (firing_frequency(latents) > threshold).float().mean()


@torch.no_grad()
def evaluate_sae(sae, x: Tensor | Iterable[Tensor], true_features: Tensor | None = None,
                 ) -> dict[str, Any]:
    """All the metrics on evaluation tokens x [n, d_in] (or an iterable of batches).

    Dead latents here: no activation on any of the n evaluation tokens (`dead_window_tokens`).
    With `true_features` [n_features, d_in]: MMCS and the number recovered (cosine > 0.9).
    """
    was_training = sae.training
    sae.eval()
    batches = [x] if isinstance(x, Tensor) else list(x)
    xs, x_hats, fired_counts, n_tokens = [], [], None, 0
    for batch in batches:
        batch = batch.reshape(-1, sae.cfg.d_in)
        out = sae(batch, sparse=False)
        counts = (out.latents != 0).sum(0)  # per latent: on how many tokens it fired
        fired_counts = counts if fired_counts is None else fired_counts + counts
        n_tokens += batch.shape[0]
        xs.append(batch)
        x_hats.append(out.x_hat)
    sae.train(was_training)
    X, X_hat = torch.cat(xs), torch.cat(x_hats)
    freq = fired_counts.float() / n_tokens
    metrics: dict[str, Any] = {
        "l0": float(fired_counts.sum()) / n_tokens,
        "explained_variance": float(explained_variance(X, X_hat)),
        "mse": float((X - X_hat).pow(2).sum(-1).mean()),
        "dead_fraction": float((freq == 0).float().mean()),
        "dense_fraction": float((freq > DENSE_FIRING_FRACTION).float().mean()),
        "dead_window_tokens": n_tokens,
    }
    if true_features is not None:
        cos = best_cosines(true_features.to(sae.device), sae.W_dec)
        metrics["mmcs"] = float(cos.mean())
        metrics["recovered"] = int((cos > RECOVERED_COSINE).sum())
        metrics["n_features"] = int(true_features.shape[0])
    return metrics
