"""How good is an SAE? The metrics of the course (docs/metrics.md explains each for learners).

On activations (toy models and language models alike):
- L0: mean number of non-zero latents per token.
- Explained variance: 1 - E||x - x_hat||^2 / E||x - E[x]||^2 over the evaluation tokens.
- Shrinkage: the relative reconstruction bias gamma = E||x_hat||^2 / E<x, x_hat> (Gated SAEs,
  Rajamanoharan et al. 2024): about 1 without shrinkage, 0.8 when x_hat = 0.8 x.
- Firing density: per latent, the fraction of tokens on which it is non-zero (plotted as
  log10(density + 1e-10)). Dead latent: no activation in the last N tokens (N reported with
  the number); dense latent: fires on more than 10% of tokens.
- Mean max cosine similarity (MMCS, toy and ground truth): for each true feature, the best
  cosine with any decoder row, averaged.

In a language model (`evaluate_lm`, with the SAE spliced in by `sae_course.splice`):
- CE loss clean, with the SAE's reconstruction spliced in, and with the activation zero-ablated;
  the CE gap CE_sae - CE_clean (nats per token; the headline number); CE-loss recovered
  (CE_zero - CE_sae) / (CE_zero - CE_clean).
- KL: mean over predictions of KL(p_clean || p_sae) of the next-token distributions.

The BOS position is left out of every statistic: its activation is left out of the activation
metrics, and the prediction made at it (of the first real token, from BOS alone) is left out of
CE and KL (no splice touches BOS, so that prediction is the same in all three runs and would
only dilute the gap).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sae_course.sae import SAE, normalize_rows
from sae_course.splice import Splice, bos_mask, check_fits

DENSE_FIRING_FRACTION = 0.1
RECOVERED_COSINE = 0.9
DENSITY_EPS = 1e-10  # log10(density + DENSITY_EPS): dead latents sit at -10


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


def log10_density(density: Tensor) -> Tensor:
    """log10(density + 1e-10): the scale firing densities are plotted on (dead latents at -10)."""
    return torch.log10(density + DENSITY_EPS)


def shrinkage(x: Tensor, x_hat: Tensor) -> Tensor:
    """gamma = E||x_hat||^2 / E<x, x_hat> over the tokens (rows): the gamma minimising
    E||x_hat / gamma - x||^2; below 1 when the SAE shrinks its reconstructions."""
    x = x.reshape(-1, x.shape[-1]).double()
    x_hat = x_hat.reshape(-1, x_hat.shape[-1]).double()
    return (x_hat.pow(2).sum() / (x * x_hat).sum()).float()


def next_token_loss(logits: Tensor, tokens: Tensor) -> Tensor:
    """Cross-entropy (nats) of predicting tokens[:, t + 1] from logits[:, t]: [batch, pos - 1]."""
    log_probs = logits[:, :-1].float().log_softmax(-1)
    return -log_probs.gather(-1, tokens[:, 1:, None]).squeeze(-1)


def kl_divergence(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL(p || q) in nats per position (last dimension: the vocabulary), from logits."""
    log_p = logits_p.float().log_softmax(-1)
    log_q = logits_q.float().log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def ce_loss_recovered(ce_clean: float, ce_sae: float, ce_zero: float) -> float:
    """(CE_zero - CE_sae) / (CE_zero - CE_clean): 1 when splicing costs nothing, 0 when it is as
    bad as zero-ablation (nan when zero-ablation costs nothing)."""
    denominator = ce_zero - ce_clean
    return (ce_zero - ce_sae) / denominator if denominator != 0 else float("nan")


class ReconstructionStats:
    """Running sums over batches of tokens for the activation metrics of an SAE.

    `update(x, x_hat, latents)` per batch (rows are tokens; leave BOS out before), then
    `metrics()`. Memory is O(d_in + d_sae) whatever the number of tokens; the numbers are those
    of `l0`, `explained_variance`, `shrinkage` and `firing_frequency` on all tokens at once.
    """

    def __init__(self, d_in: int, d_sae: int, device: torch.device | str = "cpu") -> None:
        def zero() -> Tensor:
            return torch.zeros((), dtype=torch.float64, device=device)

        self.n_tokens = 0
        self.fired = torch.zeros(d_sae, dtype=torch.long, device=device)  # tokens fired on
        self.sum_x = torch.zeros(d_in, dtype=torch.float64, device=device)
        self.sum_sq_x, self.sum_sq_error = zero(), zero()
        self.sum_sq_x_hat, self.sum_x_dot_x_hat = zero(), zero()

    @torch.no_grad()
    def update(self, x: Tensor, x_hat: Tensor, latents: Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()
        x_hat = x_hat.reshape(-1, x_hat.shape[-1]).double()
        self.n_tokens += x.shape[0]
        self.fired += (latents.reshape(-1, latents.shape[-1]) != 0).sum(0)
        self.sum_x += x.sum(0)
        self.sum_sq_x += x.pow(2).sum()
        self.sum_sq_error += (x - x_hat).pow(2).sum()
        self.sum_sq_x_hat += x_hat.pow(2).sum()
        self.sum_x_dot_x_hat += (x * x_hat).sum()

    def density(self) -> Tensor:
        """[d_sae]: the fraction of the tokens seen on which each latent fired."""
        return self.fired.float() / self.n_tokens

    def metrics(self) -> dict[str, Any]:
        n = self.n_tokens
        if n == 0:
            raise ValueError("No tokens were evaluated: the evaluation data is empty.")
        variance = self.sum_sq_x / n - (self.sum_x / n).pow(2).sum()
        density = self.density()
        return {
            "l0": float(self.fired.sum()) / n,
            "explained_variance": float(1 - self.sum_sq_error / n / variance.clamp_min(1e-30)),
            "mse": float(self.sum_sq_error / n),
            "shrinkage": float(self.sum_sq_x_hat / self.sum_x_dot_x_hat),
            "dead_fraction": float((density == 0).float().mean()),
            "dense_fraction": float((density > DENSE_FIRING_FRACTION).float().mean()),
            "dead_window_tokens": n,
        }


@torch.no_grad()
def evaluate_sae(sae, x: Tensor | Iterable[Tensor], true_features: Tensor | None = None,
                 ) -> dict[str, Any]:
    """All the activation metrics on evaluation tokens x [n, d_in] (or an iterable of batches).

    Dead latents here: no activation on any of the n evaluation tokens (`dead_window_tokens`).
    With `true_features` [n_features, d_in]: MMCS and the number recovered (cosine > 0.9).
    """
    was_training = sae.training
    sae.eval()
    stats = ReconstructionStats(sae.cfg.d_in, sae.cfg.d_sae, sae.device)
    for batch in [x] if isinstance(x, Tensor) else x:
        sae.check_input(batch)  # before the reshape, which would fold a wrong width into rows
        batch = batch.reshape(-1, sae.cfg.d_in)
        out = sae(batch, sparse=False)
        stats.update(batch, out.x_hat, out.latents)
    sae.train(was_training)
    metrics = stats.metrics()
    if true_features is not None:
        cos = best_cosines(true_features.to(sae.device), sae.W_dec)
        metrics["mmcs"] = float(cos.mean())
        metrics["recovered"] = int((cos > RECOVERED_COSINE).sum())
        metrics["n_features"] = int(true_features.shape[0])
    return metrics


# --------------------------------------------------------------------------------------------
# An SAE in a language model
# --------------------------------------------------------------------------------------------


@dataclass
class LMEvaluation:
    """The metrics of an SAE spliced into a language model (see `evaluate_lm`).

    CE and KL are in nats per prediction; `n_tokens` activations (BOS excluded) give the
    activation metrics and are the window N of the dead-latent count.
    """

    hook_name: str
    n_contexts: int
    n_predictions: int
    n_tokens: int
    ce_clean: float
    ce_sae: float
    ce_zero: float
    ce_gap: float
    ce_recovered: float
    kl: float
    explained_variance: float
    mse: float
    l0: float
    shrinkage: float
    dead: int
    dense: int
    density: Tensor = field(repr=False)  # [d_sae] firing density of each latent

    @property
    def d_sae(self) -> int:
        return len(self.density)

    @property
    def log10_density(self) -> Tensor:
        return log10_density(self.density)

    def as_dict(self) -> dict[str, Any]:
        """Every number (not the density vector), e.g. for a table or a model card."""
        return {k: v for k, v in vars(self).items() if k != "density"}

    def __str__(self) -> str:
        d = self.d_sae
        return "\n".join([
            f"SAE at {self.hook_name} on {self.n_contexts} contexts ({self.n_predictions:,} "
            f"predictions, {self.n_tokens:,} activations; BOS excluded)",
            f"  CE gap          {self.ce_gap:.4f} nats/token (CE clean {self.ce_clean:.4f}, "
            f"with SAE {self.ce_sae:.4f}, zero-ablated {self.ce_zero:.4f})",
            f"  CE recovered    {self.ce_recovered:.4f}",
            f"  KL(clean||SAE)  {self.kl:.4f} nats/token",
            f"  explained var.  {self.explained_variance:.4f}",
            f"  L0              {self.l0:.2f}",
            f"  shrinkage       {self.shrinkage:.4f}",
            f"  dead latents    {self.dead} / {d} (no activation in the last "
            f"{self.n_tokens:,} tokens)",
            f"  dense latents   {self.dense} / {d} (firing on > {DENSE_FIRING_FRACTION:.0%} of "
            "tokens)",
        ])


@torch.no_grad()
def evaluate_lm(
    sae: SAE, model: Any, tokens: Tensor, hook_name: str | None = None, *,
    batch_size: int = 8, progress: bool = True,
) -> LMEvaluation:
    """Evaluate `sae` at `hook_name` of `model` on token contexts [n, context_len].

    Per batch of `batch_size` contexts: a clean forward pass (capturing the activations), one
    with the SAE's reconstruction spliced in, one with the activation zero-ablated (BOS
    untouched in both). Only running sums are kept, so memory does not grow with n.
    `hook_name` defaults to the SAE's own `cfg.extra["hook_name"]`. The SAE runs in eval mode.
    """
    hook_name = hook_name or sae.cfg.extra.get("hook_name")
    if hook_name is None:
        raise ValueError("Which hook does this SAE read? Pass hook_name='blocks.L.hook_...'.")
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [n_contexts, context_len >= 2] token ids, got shape "
                         f"{tuple(tokens.shape)}.")
    recon = Splice(model, sae, hook_name, mode="reconstruction")
    zero = Splice(model, None, hook_name, mode="zero")
    bos_id = model.tokenizer.bos_token_id
    stats = ReconstructionStats(sae.cfg.d_in, sae.cfg.d_sae, sae.device)
    ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    kl_sum, n_predictions = 0.0, 0
    captured: dict[str, Tensor] = {}

    def capture(x: Tensor, hook: Any) -> None:
        captured["x"] = x

    was_training = sae.training
    sae.eval()
    try:
        for i in tqdm(range(0, len(tokens), batch_size), desc=f"evaluating at {hook_name}",
                      unit="batch", disable=not progress, leave=False):
            batch = tokens[i : i + batch_size].to(model.cfg.device)
            logits = {
                "clean": model.run_with_hooks(batch, fwd_hooks=[(hook_name, capture)]),
                "sae": model.run_with_hooks(batch, fwd_hooks=recon.fwd_hooks),
                "zero": model.run_with_hooks(batch, fwd_hooks=zero.fwd_hooks),
            }
            not_bos = ~bos_mask(batch, bos_id)
            predicted = not_bos[:, :-1]  # the predictions made at non-BOS positions
            for name, value in logits.items():
                ce[name] += float(next_token_loss(value, batch)[predicted].double().sum())
            kl = kl_divergence(logits["clean"][:, :-1], logits["sae"][:, :-1])
            kl_sum += float(kl[predicted].double().sum())
            n_predictions += int(predicted.sum())
            x = captured.pop("x")
            check_fits(sae, x, hook_name)
            x = x[not_bos]
            out = sae(x, sparse=False)
            stats.update(x, out.x_hat, out.latents)
    finally:
        sae.train(was_training)
    m = stats.metrics()
    ce_clean, ce_sae, ce_zero = (ce[k] / n_predictions for k in ("clean", "sae", "zero"))
    density = stats.density().cpu()
    return LMEvaluation(
        hook_name=hook_name, n_contexts=len(tokens), n_predictions=n_predictions,
        n_tokens=m["dead_window_tokens"], ce_clean=ce_clean, ce_sae=ce_sae, ce_zero=ce_zero,
        ce_gap=ce_sae - ce_clean, ce_recovered=ce_loss_recovered(ce_clean, ce_sae, ce_zero),
        kl=kl_sum / n_predictions, explained_variance=m["explained_variance"], mse=m["mse"],
        l0=m["l0"], shrinkage=m["shrinkage"], dead=int((density == 0).sum()),
        dense=int((density > DENSE_FIRING_FRACTION).sum()), density=density,
    )
