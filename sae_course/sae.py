"""Sparse autoencoders: one interface for every architecture the course uses.

    sae = SAE(SAEConfig(d_in=768, d_sae=24576, architecture="topk", k=32))
    out = sae(x)            # out.x_hat, out.latents, out.losses {"mse": ..., "aux": ...}
    out.loss.backward()     # the sum of the named loss terms

Architectures (`SAEConfig.architecture`):

- ``"relu"``: ReLU + L1 (Bricken et al. 2023; Cunningham et al. 2023, arXiv 2309.08600).
  Two variants of the sparsity penalty (`SAEConfig.l1_variant`):
  ``"unit_norm"`` keeps every decoder row at unit norm (renormalised after each step, with the
  gradient component parallel to each row removed before it), so the L1 of the latents cannot
  be shrunk by growing the decoder; ``"weighted"`` (the course default) weights each latent's
  L1 by its decoder row norm, sum_i |f_i| ||W_dec[i]||, which is invariant to that rescaling
  by construction. The course uses ``"weighted"`` because it needs no step outside the
  optimizer (so one training loop serves every architecture) and it is the form of Anthropic's
  April 2024 update and SAELens' `scale_sparsity_penalty_by_decoder_norm`.
- ``"topk"``: keep the k largest pre-activations (Gao et al. 2024, arXiv 2406.04093), with the
  AuxK loss: the k_aux largest *dead* latents reconstruct the residual (k_aux 256 capped at
  d_sae, coefficient 1/32), its squared error normalised by the residual's variance as in Gao
  et al.'s code (so the term is a fraction: 1 = no better than the residual's mean). Training
  uses a sparse decoder and sparse gradients (only the k active latents touch W_dec rows and
  W_enc columns): see `sparse_topk_encode`.
- ``"batchtopk"``: keep the batch_size * k largest pre-activations over the whole batch
  (Bussmann et al. 2024, arXiv 2412.06410); a running estimate of the smallest kept activation
  becomes a fixed threshold at inference (`sae.eval()`), so a token's code no longer depends on
  the rest of its batch.
- ``"jumprelu"``: z * H(z - theta) with a learned per-latent threshold and an L0 penalty
  (Rajamanoharan et al. 2024, arXiv 2407.14435). H has zero derivative almost everywhere, so the
  threshold is trained with straight-through estimators (`JumpReLUFunction`, `StepFunction`):
  a rectangle-kernel pseudo-derivative of width `bandwidth` around the threshold.
- ``"gated"``: the Gated SAE (Rajamanoharan et al. 2024, arXiv 2404.16014). A gate path decides
  *which* latents fire, pi_gate = (x - b_dec) W_enc + b_gate, f_gate = H(pi_gate); a magnitude
  path with the same directions rescaled per latent decides *how much*, pi_mag = (x - b_dec)
  (W_enc * exp(r_mag)) + b_mag, f = f_gate * ReLU(pi_mag). The L1 acts on ReLU(pi_gate)
  (weighted by decoder norms, as in SAELens), so it no longer shrinks the magnitudes; "aux"
  trains the gate to reconstruct through a frozen copy of the decoder (W_dec, b_dec detached),
  since H passes no gradient. Files: SAELens 6's gated layout (W_enc, b_gate, r_mag, b_mag,
  W_dec, b_dec; architecture "gated").
- ``"matryoshka"``: a TopK SAE whose nested prefixes of the dictionary (the first m latents, for
  every m in `matryoshka_prefixes`) must each reconstruct the input on their own (Bussmann,
  Nabeshima et al. 2025, arXiv 2503.17547). The loss is the full reconstruction's "mse" plus
  "prefix_mse", the sum of the shorter prefixes' errors, as in the paper's sum over prefixes;
  early latents are pushed to stay general, which counters feature absorption. At inference it
  is a plain TopK SAE (SAELens reads it as "topk"). The paper uses BatchTopK; the course uses a
  per-token TopK so its L0 equals the TopK SAE's it is compared with.

Files follow SAELens 6: a folder with `cfg.json` and `sae_weights.safetensors` holding
`W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]`, `b_enc [d_sae]`, `b_dec [d_in]` (and `threshold
[d_sae]` for JumpReLU/BatchTopK; a Gated SAE has `b_gate`, `r_mag`, `b_mag` instead of
`b_enc`), so SAELens reads what `SAE.save` writes and `SAE.load` reads
SAELens's files. cfg.json's `metadata` block holds where the SAE reads and what it was trained
on; `SAE.load` puts it in `cfg.extra`, so `cfg.extra["hook_name"]` and `cfg.extra["model_name"]`
are there for every file that records them. Saving replaces the folder as a whole; loading
checks cfg.json and the weights' header before reading any tensor, and refuses (naming the key
or tensor and the fix) what it cannot reproduce exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from sae_course.files import (
    save_safetensors_atomic,
    stale_folders,
    write_folder_atomic,
    write_text_atomic,
)
from sae_course.settings import stream_generator

ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu", "matryoshka", "gated")
L1_VARIANTS = ("weighted", "unit_norm")
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSE_MIN_D_SAE = 2048  # the sparse TopK path pays off from about this many latents
CONFIG_FILE = "cfg.json"
INIT_STREAM = "sae.init"
"""The stream key of the initial weights: `SAE(seed=s)` draws from
`stream_generator(INIT_STREAM, s)`, never the stream of synthetic features with the same seed."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class SAEConfig:
    """Everything that defines an SAE (sizes, architecture, loss coefficients).

    `sparsity_coefficient` is the L1 coefficient (relu, gated) or the L0 coefficient
    (jumprelu); TopK and BatchTopK get their sparsity from `k`. `dead_after_tokens` is N in
    "dead = no activation in the last N tokens" (Gao et al. use 10M tokens on language models).
    """

    d_in: int
    d_sae: int
    architecture: str = "relu"
    k: int | None = None
    sparsity_coefficient: float = 1.0
    l1_variant: str = "weighted"
    k_aux: int = 256
    aux_coefficient: float = 1.0 / 32
    jumprelu_bandwidth: float = 0.001
    jumprelu_init_threshold: float = 0.001
    batchtopk_momentum: float = 0.01
    apply_b_dec_to_input: bool = True
    dead_after_tokens: int = 10_000_000
    tied_init: bool = True  # W_enc starts as W_dec^T (Gao et al.); False: independent init
    matryoshka_prefixes: list[int] | None = None  # None: d_sae/16, /8, /4, /2 and d_sae
    extra: dict[str, Any] = field(default_factory=dict)  # free-form metadata (hook name...)

    def __post_init__(self) -> None:
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                what = "input width" if name == "d_in" else "number of latents"
                raise ValueError(f"{name} must be a positive integer, got {value!r}. Fix: "
                                 f"pass the SAE's {what}.")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"Unknown architecture {self.architecture!r}: choose one of {ARCHITECTURES}."
            )
        if self.l1_variant not in L1_VARIANTS:
            raise ValueError(
                f"Unknown l1_variant {self.l1_variant!r}: choose one of {L1_VARIANTS}."
            )
        if self.architecture in ("topk", "batchtopk", "matryoshka"):
            if self.k is None:
                raise ValueError(f"architecture {self.architecture!r} needs k: pass k=... .")
            if not isinstance(self.k, int) or self.k <= 0:
                raise ValueError(f"k must be a positive integer, got {self.k!r}.")
            if self.k > self.d_sae:
                raise ValueError(
                    f"k={self.k} is larger than d_sae={self.d_sae}: a TopK SAE cannot keep more "
                    f"latents than it has; use k <= {self.d_sae} or a larger d_sae."
                )
        for name in ("sparsity_coefficient", "aux_coefficient", "jumprelu_bandwidth",
                     "jumprelu_init_threshold", "batchtopk_momentum"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"{name} must be a finite number >= 0, got {value!r}: a negative "
                    "coefficient would reward the very thing the loss term penalises."
                )
        if self.jumprelu_bandwidth == 0:
            raise ValueError(
                "jumprelu_bandwidth must be > 0: the JumpReLU threshold's gradient divides by "
                "it. Fix: keep the default 0.001 or pass a small positive value."
            )
        if self.k_aux < 0 or self.dead_after_tokens <= 0:
            raise ValueError("k_aux must be >= 0 and dead_after_tokens > 0.")
        if self.architecture == "matryoshka":
            if self.matryoshka_prefixes is None:
                self.matryoshka_prefixes = sorted({max(1, self.d_sae // d) for d in (16, 8, 4, 2)}
                                                  | {self.d_sae})
            prefixes = [int(m) for m in self.matryoshka_prefixes]
            if (prefixes != sorted(set(prefixes)) or prefixes[0] < 1
                    or prefixes[-1] != self.d_sae):
                raise ValueError(
                    f"matryoshka_prefixes must be increasing sizes ending at d_sae={self.d_sae}, "
                    f"got {self.matryoshka_prefixes!r}. Fix: e.g. [{self.d_sae // 4}, "
                    f"{self.d_sae // 2}, {self.d_sae}]."
                )
            self.matryoshka_prefixes = prefixes
        elif self.matryoshka_prefixes is not None:
            raise ValueError(f"matryoshka_prefixes is set but architecture is "
                             f"{self.architecture!r}: use architecture='matryoshka' or drop it.")

    @property
    def k_aux_effective(self) -> int:
        """k_aux capped at d_sae."""
        return min(self.k_aux, self.d_sae)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# The pieces, as functions (the notebook's exercises are checked against these)
# --------------------------------------------------------------------------------------------


def relu_encode(x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor) -> Tensor:
    """ReLU SAE latents: relu((x - b_dec) @ W_enc + b_enc)."""
    return torch.relu((x - b_dec) @ W_enc + b_enc)


def l1_penalty(latents: Tensor, W_dec: Tensor | None = None) -> Tensor:
    """Per-token L1 of the latents, each weighted by its decoder row norm when W_dec is given.

    Returns shape [batch]; the loss term is `coefficient * l1_penalty(...).mean()`.
    """
    if W_dec is None:
        return latents.abs().sum(-1)
    return (latents.abs() * W_dec.norm(dim=-1)).sum(-1)


def remove_parallel_component(W_dec: Tensor, grad: Tensor) -> Tensor:
    """The gradient with, for each decoder row, its component along that row removed.

    With unit-norm rows this keeps a step tangent to the sphere, so renormalising after the
    step changes the row as little as possible.
    """
    unit = normalize_rows(W_dec)
    return grad - (grad * unit).sum(-1, keepdim=True) * unit


def normalize_rows(W: Tensor) -> Tensor:
    """Each row scaled to unit norm (zero rows left at zero)."""
    return W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def topk_activation(pre: Tensor, k: int) -> Tensor:
    """Keep the k largest pre-activations of each row, ReLU'd; every other latent is 0."""
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))


def batchtopk_activation(pre: Tensor, k: int) -> Tensor:
    """Keep the batch_size * k largest pre-activations over the whole batch, ReLU'd."""
    flat = pre.reshape(-1)
    n_keep = min(k * pre.shape[0], flat.numel())
    values, indices = flat.topk(n_keep)
    return torch.zeros_like(flat).scatter(-1, indices, torch.relu(values)).reshape(pre.shape)


def auxk_loss(
    residual: Tensor, pre: Tensor, W_dec: Tensor, dead_mask: Tensor, k_aux: int
) -> Tensor:
    """Gao et al.'s AuxK loss: the k_aux largest dead latents reconstruct the residual.

    `residual` is x - x_hat (treated as a constant: detached), `pre` the pre-activations,
    `dead_mask` [d_sae] bool. Returns E||residual - aux_latents @ W_dec||^2 / E||residual -
    E[residual]||^2 (expectations over tokens, squared norms over d_in): Gao et al.'s normalised
    MSE. When the residual has no variance (one token) the error is returned unnormalised; 0
    when no latent is dead. k_aux is capped at the number of dead latents.
    """
    n_dead = int(dead_mask.sum())
    k_eff = min(k_aux, n_dead)
    if k_eff == 0:
        return pre.new_zeros(())
    masked = pre.masked_fill(~dead_mask, float("-inf"))
    aux_latents = topk_activation(masked, k_eff)
    aux_latents = torch.nan_to_num(aux_latents, neginf=0.0)
    e_hat = aux_latents @ W_dec
    return normalized_aux_error(residual.detach(), e_hat)


def normalized_aux_error(residual: Tensor, e_hat: Tensor) -> Tensor:
    """E||residual - e_hat||^2 / E||residual - E[residual]||^2 over tokens (the denominator is
    left out when it is 0: one token, or identical residuals)."""
    error = (residual - e_hat).pow(2).sum(-1).mean()
    variance = (residual - residual.mean(0)).pow(2).sum(-1).mean()
    return torch.where(variance > 0, error / torch.where(variance > 0, variance, 1.0), error)


def gated_forward(
    x: Tensor, W_enc: Tensor, b_gate: Tensor, r_mag: Tensor, b_mag: Tensor, W_dec: Tensor,
    b_dec: Tensor, sparsity_coefficient: float, apply_b_dec_to_input: bool = True,
    weighted_l1: bool = True,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """A Gated SAE's forward pass and loss (Rajamanoharan et al. 2024, arXiv 2404.16014).

    Returns (x_hat, latents, losses) with losses "mse" (||x - x_hat||^2 summed over d_in, mean
    over tokens), "l1" (coefficient * the L1 of ReLU(pi_gate), each latent weighted by its
    decoder row norm when `weighted_l1`) and "aux" (||x - (ReLU(pi_gate) @ W_dec + b_dec)||^2
    with W_dec and b_dec detached: the gate learns to reconstruct without moving the decoder).
    """
    x_in = x - b_dec if apply_b_dec_to_input else x
    pi_gate = x_in @ W_enc + b_gate
    pi_mag = x_in @ (W_enc * r_mag.exp()) + b_mag
    latents = (pi_gate > 0).to(x.dtype) * torch.relu(pi_mag)
    x_hat = latents @ W_dec + b_dec
    gate = torch.relu(pi_gate)
    l1 = l1_penalty(gate, W_dec if weighted_l1 else None).mean()
    via_gate = gate @ W_dec.detach() + b_dec.detach()
    losses = {"mse": (x_hat - x).pow(2).sum(-1).mean(),
              "l1": sparsity_coefficient * l1,
              "aux": (via_gate - x).pow(2).sum(-1).mean()}
    return x_hat, latents, losses


def _rectangle(z: Tensor) -> Tensor:
    return ((z > -0.5) & (z < 0.5)).to(z.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """JumpReLU z * H(z - theta) with the straight-through estimator of arXiv 2407.14435.

    Backward: d/dz = H(z - theta) (exact almost everywhere); d/dtheta uses the pseudo-derivative
    -(theta / bandwidth) * K((z - theta) / bandwidth) with K the rectangle kernel
    (1 on (-1/2, 1/2)); the gradient to theta is summed over the batch.
    """

    @staticmethod
    def forward(ctx, z: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return z * (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        z, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_z = grad_out * (z > threshold).to(z.dtype)
        grad_theta = -(threshold / bw) * _rectangle((z - threshold) / bw) * grad_out
        grad_theta = _sum_to(grad_theta, threshold.shape)
        return grad_z, grad_theta, None


class StepFunction(torch.autograd.Function):
    """Heaviside H(z - theta) with the straight-through estimator (for the L0 penalty).

    Backward: no gradient to z; d/dtheta = -(1 / bandwidth) * K((z - theta) / bandwidth).
    """

    @staticmethod
    def forward(ctx, z: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        z, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_theta = -(1.0 / bw) * _rectangle((z - threshold) / bw) * grad_out
        return torch.zeros_like(z), _sum_to(grad_theta, threshold.shape), None


def _sum_to(t: Tensor, shape: torch.Size) -> Tensor:
    while t.dim() > len(shape):
        t = t.sum(0)
    return t


def jumprelu(z: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    return JumpReLUFunction.apply(z, threshold, bandwidth)


def step(z: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    return StepFunction.apply(z, threshold, bandwidth)


def geometric_median(
    points: Tensor, max_iter: int = 100, tol: float = 1e-7, eps: float = 1e-8
) -> Tensor:
    """The point minimising the sum of Euclidean distances to `points` [n, d] (Weiszfeld).

    Each iteration is a weighted mean with weights 1 / distance (clamped at eps so a point on
    the estimate does not divide by zero); stops when the estimate moves less than
    tol * (1 + its norm). Starts from the mean; computed in float64.
    """
    if points.dim() != 2 or points.shape[0] == 0:
        raise ValueError(
            f"geometric_median needs points of shape [n, d], n >= 1; got {tuple(points.shape)}."
        )
    pts = points.double()
    median = pts.mean(0)
    for _ in range(max_iter):
        dist = (pts - median).norm(dim=-1).clamp_min(eps)
        weights = 1.0 / dist
        new = (weights[:, None] * pts).sum(0) / weights.sum()
        moved = (new - median).norm()
        median = new
        if moved <= tol * (1 + median.norm()):
            break
    return median.to(points.dtype)


# --------------------------------------------------------------------------------------------
# Sparse TopK: encoder + top-k + ReLU with a sparse backward
# --------------------------------------------------------------------------------------------


def _encoder_weight_grad_T(x_in: Tensor, idx: Tensor, grad: Tensor, d_sae: int) -> Tensor:
    """sum over (token b, slot s) of grad[b, s] * x_in[b] into row idx[b, s]: [d_sae, d_in].

    This is (x_in^T @ G)^T for the sparse G with grad[b, s] at (b, idx[b, s]); done as an
    embedding_bag (one bag per latent) so it costs O(batch * k * d_in), not a dense matmul.
    """
    n, kk = idx.shape
    flat = idx.reshape(-1)
    order = torch.argsort(flat)
    tokens = torch.arange(n, device=idx.device).repeat_interleave(kk)[order]
    weights = grad.reshape(-1)[order].to(x_in.dtype)
    counts = torch.bincount(flat, minlength=d_sae)
    offsets = torch.cumsum(counts, 0) - counts
    return F.embedding_bag(tokens, x_in, offsets, mode="sum", per_sample_weights=weights)


class _SparseTopKEncode(torch.autograd.Function):
    """(x, W_enc, b_enc, b_dec) -> the k largest ReLU'd latents (values, indices), plus the
    k_aux largest dead ones when a dead mask is given. Backward is sparse in the latents."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, b_dec, k, dead_mask, k_aux, subtract_b_dec):  # type: ignore[override]
        x_in = x - b_dec if subtract_b_dec else x
        pre = torch.addmm(b_enc, x_in, W_enc)
        vals, idx = pre.topk(k, dim=-1, sorted=False)
        vals = torch.relu(vals)
        if dead_mask is not None and k_aux > 0:
            pre.masked_fill_(~dead_mask, float("-inf"))
            aux_vals, aux_idx = pre.topk(k_aux, dim=-1, sorted=False)
            aux_vals = torch.relu(aux_vals)  # relu(-inf) = 0
        else:
            aux_vals = vals.new_zeros(vals.shape[0], 0)
            aux_idx = idx.new_zeros(idx.shape[0], 0)
        del pre
        ctx.save_for_backward(x_in, W_enc, idx, vals, aux_idx, aux_vals)
        ctx.subtract_b_dec = subtract_b_dec
        ctx.mark_non_differentiable(idx, aux_idx)
        return vals, idx, aux_vals, aux_idx

    @staticmethod
    def backward(ctx, g_vals, _g_idx, g_aux, _g_aux_idx):  # type: ignore[override]
        x_in, W_enc, idx, vals, aux_idx, aux_vals = ctx.saved_tensors
        d_sae = W_enc.shape[1]
        if g_vals is None:
            g_vals = torch.zeros_like(vals)
        g = g_vals * (vals > 0)
        all_idx, all_g = idx, g
        if aux_idx.shape[1] > 0 and g_aux is not None:
            all_idx = torch.cat([idx, aux_idx], 1)
            all_g = torch.cat([g, g_aux * (aux_vals > 0)], 1)
        grad_b_enc = torch.zeros(d_sae, dtype=W_enc.dtype, device=W_enc.device)
        grad_b_enc.index_add_(0, all_idx.reshape(-1), all_g.reshape(-1).to(W_enc.dtype))
        grad_x = grad_W_enc = grad_b_dec = None
        if ctx.needs_input_grad[1]:
            grad_W_enc = _encoder_weight_grad_T(x_in, all_idx, all_g, d_sae).t().contiguous()
        if ctx.needs_input_grad[0] or (ctx.needs_input_grad[3] and ctx.subtract_b_dec):
            # d/dx_in = G @ W_enc^T, sparse: a bag of W_enc columns per token
            grad_x_in = F.embedding_bag(
                all_idx, W_enc.t().contiguous(), mode="sum",
                per_sample_weights=all_g.to(W_enc.dtype),
            )
            if ctx.needs_input_grad[0]:
                grad_x = grad_x_in
            if ctx.needs_input_grad[3] and ctx.subtract_b_dec:
                grad_b_dec = -grad_x_in.sum(0)
        return grad_x, grad_W_enc, grad_b_enc, grad_b_dec, None, None, None, None


def sparse_topk_encode(
    x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor, k: int,
    dead_mask: Tensor | None = None, k_aux: int = 0, subtract_b_dec: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """TopK latents as (values [n, k], indices [n, k]) plus the AuxK ones (k_aux of the dead).

    Gradients flow to W_enc, b_enc, b_dec (and x) only through the kept latents.
    """
    if dead_mask is not None:
        k_aux = min(k_aux, int(dead_mask.sum()))
        if k_aux == 0:
            dead_mask = None
    return _SparseTopKEncode.apply(x, W_enc, b_enc, b_dec, k, dead_mask, k_aux, subtract_b_dec)


def matryoshka_prefix_mse(x: Tensor, latents: Tensor, W_dec: Tensor, b_dec: Tensor,
                          prefixes: list[int]) -> Tensor:
    """Sum over the proper prefixes m of mean_tokens ||x - (latents[:, :m] @ W_dec[:m] + b_dec)||^2.

    The full dictionary (the last prefix) is left out: its error is the SAE's "mse" term.
    """
    total = x.new_zeros(())
    partial = b_dec.expand_as(x)
    start = 0
    for m in prefixes[:-1]:
        partial = partial + latents[:, start:m] @ W_dec[start:m]
        total = total + (x - partial).pow(2).sum(-1).mean()
        start = m
    return total


def sparse_decode(values: Tensor, indices: Tensor, W_dec: Tensor) -> Tensor:
    """sum_s values[:, s] * W_dec[indices[:, s]]: a decoder product touching only active rows."""
    if indices.shape[1] == 0:
        return values.new_zeros(values.shape[0], W_dec.shape[1])
    return F.embedding_bag(indices, W_dec, mode="sum", per_sample_weights=values)


# --------------------------------------------------------------------------------------------
# The SAE
# --------------------------------------------------------------------------------------------


class SAEOutput:
    """What `SAE.forward` returns: the reconstruction, the latents and the named loss terms.

    For the sparse TopK path the dense latents are built only when `.latents` is read; the
    sparse form is in `latent_values` / `latent_indices`.
    """

    def __init__(self, x_hat: Tensor, losses: dict[str, Tensor], latents: Tensor | None = None,
                 latent_values: Tensor | None = None, latent_indices: Tensor | None = None,
                 d_sae: int | None = None) -> None:
        self.x_hat = x_hat
        self.losses = losses
        self._latents = latents
        self.latent_values = latent_values
        self.latent_indices = latent_indices
        self._d_sae = d_sae

    @property
    def latents(self) -> Tensor:
        if self._latents is None:
            v, i = self.latent_values, self.latent_indices
            dense = v.new_zeros(v.shape[:-1] + (self._d_sae,))
            self._latents = dense.scatter(-1, i, v)
        return self._latents

    @property
    def loss(self) -> Tensor:
        """The training loss: the sum of the named terms."""
        return sum(self.losses.values())  # type: ignore[return-value]

    def fired(self) -> Tensor:
        """[d_sae] bool: which latents were non-zero on at least one token of the batch."""
        if self._latents is None and self.latent_indices is not None:
            d = self._d_sae
            idx = self.latent_indices[self.latent_values > 0]
            return torch.bincount(idx.reshape(-1), minlength=d) > 0
        return (self.latents.reshape(-1, self.latents.shape[-1]) != 0).any(0)


class SAE(nn.Module):
    """A sparse autoencoder: x_hat = decode(encode(x)). See the module docstring.

    The initial weights come from `stream_generator(INIT_STREAM, seed)` (`seed=None`: a seed
    drawn from the global torch RNG), so a fresh SAE shares no random numbers with data made
    from the same seed.
    """

    def __init__(
        self, cfg: SAEConfig, device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32, seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        d_in, d_sae = cfg.d_in, cfg.d_sae
        gen = stream_generator(INIT_STREAM, seed)
        W_dec = normalize_rows(torch.randn(d_sae, d_in, generator=gen, dtype=torch.float64))
        self.W_dec = nn.Parameter(W_dec.to(device=device, dtype=dtype))
        if cfg.tied_init:
            W_enc = W_dec.t().contiguous()
        else:  # independent, Kaiming-uniform-like (as in Bricken et al. 2023)
            bound = 1 / math.sqrt(d_in)
            W_enc = (torch.rand(d_in, d_sae, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        self.W_enc = nn.Parameter(W_enc.to(device=device, dtype=dtype))
        if cfg.architecture == "gated":  # SAELens's names: no b_enc, a gate and a magnitude bias
            for name in ("b_gate", "r_mag", "b_mag"):
                setattr(self, name, nn.Parameter(torch.zeros(d_sae, device=device, dtype=dtype)))
        else:
            self.b_enc = nn.Parameter(torch.zeros(d_sae, device=device, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_in, device=device, dtype=dtype))
        if cfg.architecture == "jumprelu":
            self.threshold = nn.Parameter(
                torch.full((d_sae,), cfg.jumprelu_init_threshold, device=device, dtype=dtype)
            )
        elif cfg.architecture == "batchtopk":
            self.register_buffer("threshold", torch.zeros((), device=device, dtype=dtype))
            self.register_buffer(
                "threshold_updates", torch.zeros((), device=device, dtype=torch.long)
            )
        self.register_buffer(
            "tokens_since_fired", torch.zeros(d_sae, device=device, dtype=torch.long)
        )

    # ---- input checks -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    def check_input(self, x: Tensor) -> None:
        """Raise ValueError naming the problem and the fix when x does not fit this SAE."""
        if not isinstance(x, Tensor):
            raise ValueError(f"The SAE expects a torch.Tensor, got {type(x).__name__}.")
        if x.dim() == 0 or x.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"Input has last dimension {x.shape[-1] if x.dim() else 'none'} (shape "
                f"{tuple(x.shape)}) but this SAE has d_in={self.cfg.d_in}: pass activations "
                f"of shape [..., {self.cfg.d_in}] (is it the right hook/layer?)."
            )
        if x.dtype != self.dtype:
            raise ValueError(
                f"Input dtype is {x.dtype} but the SAE's weights are {self.dtype}: convert with "
                f"x.to({self.dtype}) or the SAE with sae.to({x.dtype})."
            )
        if x.device != self.device:
            raise ValueError(
                f"Input is on {x.device} but the SAE is on {self.device}: move one with "
                f"x.to('{self.device}') or sae.to('{x.device}')."
            )
        if not bool(torch.isfinite(x).all()):
            raise ValueError(
                "Input contains NaN or Inf values: check the activations (e.g. a normalisation "
                "dividing by zero, or float16 overflow) before passing them to the SAE."
            )

    # ---- the forward pass -----------------------------------------------------------------
    def pre_activations(self, x: Tensor) -> Tensor:
        """(x - b_dec) W_enc + b_enc; for a Gated SAE the gate's pre-activations (b_gate)."""
        x_in = x - self.b_dec if self.cfg.apply_b_dec_to_input else x
        return x_in @ self.W_enc + (self.b_gate if self.cfg.architecture == "gated"
                                    else self.b_enc)

    def _gated(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        cfg = self.cfg
        return gated_forward(x, self.W_enc, self.b_gate, self.r_mag, self.b_mag, self.W_dec,
                             self.b_dec, cfg.sparsity_coefficient, cfg.apply_b_dec_to_input,
                             weighted_l1=cfg.l1_variant == "weighted")

    def activation(self, pre: Tensor) -> Tensor:
        """Latents from pre-activations (dense), as the architecture says (not gated: its
        latents need the magnitude path too; use `encode`)."""
        arch = self.cfg.architecture
        if arch == "gated":
            raise ValueError("A Gated SAE's latents need both paths: call sae.encode(x).")
        if arch == "relu":
            return torch.relu(pre)
        if arch in ("topk", "matryoshka"):
            return topk_activation(pre, self.cfg.k)  # type: ignore[arg-type]
        if arch == "batchtopk":
            if self.training:
                return batchtopk_activation(pre, self.cfg.k)  # type: ignore[arg-type]
            return pre * (pre > self.threshold).to(pre.dtype)
        return jumprelu(pre, self.threshold, self.cfg.jumprelu_bandwidth)

    def encode(self, x: Tensor) -> Tensor:
        """The latents [..., d_sae] (dense)."""
        self.check_input(x)
        shape = x.shape
        x = x.reshape(-1, self.cfg.d_in)
        if self.cfg.architecture == "gated":
            lat = self._gated(x)[1]
        else:
            lat = self.activation(self.pre_activations(x))
        return lat.reshape(*shape[:-1], self.cfg.d_sae)

    def decode(self, latents: Tensor) -> Tensor:
        """The reconstruction latents @ W_dec + b_dec."""
        if latents.shape[-1] != self.cfg.d_sae:
            raise ValueError(
                f"Latents have last dimension {latents.shape[-1]} but this SAE has "
                f"d_sae={self.cfg.d_sae}: pass the output of sae.encode."
            )
        return latents @ self.W_dec + self.b_dec

    def dead_mask(self) -> Tensor:
        """[d_sae] bool: latents with no activation in the last `dead_after_tokens` tokens."""
        return self.tokens_since_fired >= self.cfg.dead_after_tokens

    @torch.no_grad()
    def record_firing(self, fired: Tensor, n_tokens: int) -> None:
        """Update the dead-latent tracker after a batch of n_tokens ([d_sae] bool `fired`)."""
        self.tokens_since_fired += n_tokens
        self.tokens_since_fired[fired] = 0

    def forward(self, x: Tensor, sparse: bool | None = None) -> SAEOutput:
        """Reconstruct x; returns an SAEOutput with x_hat, latents and the named losses.

        Loss terms: "mse" (squared error summed over d_in, mean over tokens) and, by
        architecture, "l1" (relu), "l0" (jumprelu), "aux" (topk/batchtopk, training only) or
        "l1" and "aux" (gated: the gate's reconstruction through the frozen decoder).
        `sparse` picks the sparse TopK path (default: on for topk while training when
        d_sae >= SPARSE_MIN_D_SAE; below that the dense path is faster). Both give the same
        numbers (tests/test_sae.py checks loss, gradients and the updated parameters).
        """
        self.check_input(x)
        shape = x.shape
        x = x.reshape(-1, self.cfg.d_in)
        cfg = self.cfg
        if sparse is None:
            sparse = self.training and cfg.d_sae >= SPARSE_MIN_D_SAE
        if cfg.architecture == "topk" and sparse:
            out = self._forward_sparse_topk(x)
        else:
            out = self._forward_dense(x)
        out.x_hat = out.x_hat.reshape(shape)
        return out

    def _aux_wanted(self) -> Tensor | None:
        if not self.training or self.cfg.aux_coefficient == 0 or self.cfg.k_aux == 0:
            return None
        dead = self.dead_mask()
        return dead if bool(dead.any()) else None

    def _forward_dense(self, x: Tensor) -> SAEOutput:
        cfg = self.cfg
        if cfg.architecture == "gated":
            x_hat, latents, losses = self._gated(x)
            return SAEOutput(x_hat, losses, latents=latents, d_sae=cfg.d_sae)
        pre = self.pre_activations(x)
        latents = self.activation(pre)
        x_hat = self.decode(latents)
        losses = {"mse": (x_hat - x).pow(2).sum(-1).mean()}
        if cfg.architecture == "matryoshka":
            losses["prefix_mse"] = matryoshka_prefix_mse(x, latents, self.W_dec, self.b_dec,
                                                         cfg.matryoshka_prefixes)
        if cfg.architecture == "relu":
            W = self.W_dec if cfg.l1_variant == "weighted" else None
            losses["l1"] = cfg.sparsity_coefficient * l1_penalty(latents, W).mean()
        elif cfg.architecture == "jumprelu":
            l0 = step(pre, self.threshold, cfg.jumprelu_bandwidth).sum(-1).mean()
            losses["l0"] = cfg.sparsity_coefficient * l0
        else:
            if cfg.architecture == "batchtopk" and self.training:
                self._update_batchtopk_threshold(latents)
            dead = self._aux_wanted()
            if dead is not None:
                aux = auxk_loss(x - x_hat, pre, self.W_dec, dead, cfg.k_aux_effective)
                losses["aux"] = cfg.aux_coefficient * aux
        return SAEOutput(x_hat, losses, latents=latents, d_sae=cfg.d_sae)

    def _forward_sparse_topk(self, x: Tensor) -> SAEOutput:
        cfg = self.cfg
        dead = self._aux_wanted()
        vals, idx, aux_vals, aux_idx = sparse_topk_encode(
            x, self.W_enc, self.b_enc, self.b_dec, cfg.k, dead, cfg.k_aux_effective,
            cfg.apply_b_dec_to_input,
        )
        x_hat = sparse_decode(vals, idx, self.W_dec) + self.b_dec
        losses = {"mse": (x_hat - x).pow(2).sum(-1).mean()}
        if dead is not None:
            e_hat = sparse_decode(aux_vals, aux_idx, self.W_dec)
            aux = normalized_aux_error((x - x_hat).detach(), e_hat)
            losses["aux"] = cfg.aux_coefficient * aux
        return SAEOutput(x_hat, losses, latent_values=vals, latent_indices=idx, d_sae=cfg.d_sae)

    @torch.no_grad()
    def _update_batchtopk_threshold(self, latents: Tensor) -> None:
        positive = latents[latents > 0]
        if positive.numel() == 0:
            return
        smallest = positive.min()
        if int(self.threshold_updates) == 0:
            self.threshold.copy_(smallest)
        else:
            m = self.cfg.batchtopk_momentum
            self.threshold.mul_(1 - m).add_(m * smallest)
        self.threshold_updates += 1

    # ---- around the optimizer step ------------------------------------------------------
    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Unit-norm ReLU SAE: remove the gradient component parallel to each decoder row."""
        if self.cfg.architecture in ("relu", "gated") and self.cfg.l1_variant == "unit_norm":
            if self.W_dec.grad is not None:
                self.W_dec.grad.copy_(remove_parallel_component(self.W_dec, self.W_dec.grad))

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Unit-norm ReLU SAE: renormalise the decoder rows; JumpReLU: keep thresholds > 0."""
        if self.cfg.architecture in ("relu", "gated") and self.cfg.l1_variant == "unit_norm":
            self.W_dec.copy_(normalize_rows(self.W_dec))
        if self.cfg.architecture == "jumprelu":
            self.threshold.clamp_(min=1e-6)

    # ---- initialisation -------------------------------------------------------------------
    @torch.no_grad()
    def init_b_dec(self, x: Tensor, method: str = "geometric_median") -> None:
        """Set b_dec from a sample of activations [n, d_in]: their mean or geometric median."""
        self.check_input(x)
        x = x.reshape(-1, self.cfg.d_in)
        if method == "mean":
            self.b_dec.copy_(x.mean(0))
        elif method == "geometric_median":
            self.b_dec.copy_(geometric_median(x))
        else:
            raise ValueError(f"Unknown method {method!r}: use 'mean' or 'geometric_median'.")

    # ---- files ----------------------------------------------------------------------------
    def weights(self) -> dict[str, Tensor]:
        """The tensors saved in sae_weights.safetensors (SAELens names and shapes)."""
        w = {"W_enc": self.W_enc, "W_dec": self.W_dec, "b_dec": self.b_dec,
             **{name: getattr(self, name) for name in encoder_bias_names(self.cfg)}}
        if self.cfg.architecture == "jumprelu":
            w["threshold"] = self.threshold
        elif self.cfg.architecture == "batchtopk":
            w["threshold"] = self.threshold.expand(self.cfg.d_sae)
        return {k: v.detach().contiguous().cpu() for k, v in w.items()}

    def saelens_config(self) -> dict[str, Any]:
        """cfg.json in SAELens 6's layout, plus this course's full config under "sae_course".

        `cfg.extra` becomes SAELens's `metadata` block (hook_name, model_name, ...), which
        SAELens reads only from files declaring a 6.x layout (`sae_lens_version`).
        """
        cfg = self.cfg
        out: dict[str, Any] = {
            "architecture": SAELENS_ARCHITECTURE[cfg.architecture],
            "d_in": cfg.d_in,
            "d_sae": cfg.d_sae,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
            "normalize_activations": "none",
            "reshape_activations": "none",
        }
        if cfg.architecture in ("topk", "matryoshka"):
            out.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
        out["metadata"] = {"sae_lens_version": SAELENS_LAYOUT_VERSION, **cfg.extra}
        out["sae_course"] = {k: v for k, v in cfg.to_dict().items() if k != "extra"}
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write `path` as an SAE folder (cfg.json + sae_weights.safetensors), as a whole.

        The folder is built beside `path` and swapped in (`files.write_folder_atomic`), so a
        crash leaves either the old SAE or the new one, never one's config with the other's
        weights. `path` must be a new folder or an SAE folder (nothing else in it is kept).
        """
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise SAEFileError(f"Cannot save the SAE to {folder}: it is a file. Fix: pass a "
                               "folder path (the SAE is saved as a folder of two files).")
        if folder.is_dir():
            others = sorted(p.name for p in folder.iterdir() if p.name not in SAE_FILES)
            if others:
                raise SAEFileError(
                    f"Cannot save the SAE to {folder}: it holds other files ({', '.join(others)}) "
                    "that saving would delete, since an SAE folder is replaced as a whole. Fix: "
                    "save into a folder of its own, e.g. a subfolder."
                )
        try:
            text = json.dumps(self.saelens_config(), indent=2, allow_nan=False) + "\n"
        except (TypeError, ValueError) as err:
            raise SAEFileError(
                f"cfg.extra cannot be written to cfg.json ({err}). Fix: keep only JSON values "
                "(strings, numbers, booleans, lists, dicts) in sae.cfg.extra."
            ) from err
        weights = self.weights()
        for name, t in weights.items():
            if not bool(torch.isfinite(t).all()):
                raise SAEFileError(
                    f"Not saving the SAE to {folder}: {name} holds NaN or Inf values (training "
                    "diverged). Fix: lower the learning rate and train again, or load the last "
                    "good checkpoint."
                )

        def write(tmp: Path) -> None:
            save_safetensors_atomic(weights, tmp / WEIGHTS_FILE)
            write_text_atomic(tmp / CONFIG_FILE, text)

        write_folder_atomic(folder, write)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None) -> SAE:
        """Load an SAE folder written by `save` or by SAELens; returns it in eval mode.

        cfg.json is read strictly (see `read_config`); the weights file's header (shapes and
        dtypes) is checked against it before any tensor is read, so a bad file costs no
        memory. SAELens's `metadata` block (or, in files older than SAELens 6, the same keys
        at the top level, `hook_point` read as `hook_name`) lands in `cfg.extra`: every loaded
        SAE whose file names its hook and model has `cfg.extra["hook_name"]` and
        `cfg.extra["model_name"]`. `dtype` defaults to the weights' own.
        """
        folder = Path(path)
        cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        for p in (cfg_path, w_path):
            if not p.is_file():
                left = [s.name for s in stale_folders(folder)]
                hint = (f" An interrupted save left {', '.join(left)} beside it: rename the "
                        "complete one to the folder's name." if left else "")
                raise FileNotFoundError(
                    f"{p} does not exist: an SAE folder needs {CONFIG_FILE} and "
                    f"{WEIGHTS_FILE}.{hint}"
                )
        if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
            raise SAEFileError(f"{cfg_path} is {cfg_path.stat().st_size} bytes, too large for "
                               "an SAE config: is it the right file?")
        try:
            raw = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SAEFileError(f"{cfg_path} is not valid JSON ({err}). Fix: restore the file "
                               "or save the SAE again.") from err
        layout = read_config(raw, cfg_path)
        cfg = layout.cfg
        with _open_weights(w_path) as f:
            expected = {"W_enc": (cfg.d_in, cfg.d_sae), "W_dec": (cfg.d_sae, cfg.d_in),
                        "b_dec": (cfg.d_in,),
                        **{name: (cfg.d_sae,) for name in encoder_bias_names(cfg)}}
            if cfg.architecture in ("jumprelu", "batchtopk"):
                expected["threshold"] = (cfg.d_sae,)
            file_dtype = _check_header(f, w_path, expected, layout.dtype)
            with torch.device("meta"):  # the module's structure, without allocating weights
                sae = cls(cfg, device="meta", dtype=dtype or file_dtype, seed=0)
            target = {"device": torch.device(device or "cpu"), "dtype": dtype or file_dtype}
            tensors = {name: f.get_tensor(name) for name in expected}
        _check_values(tensors, w_path, cfg)
        if layout.rescale_acts_by_decoder_norm:
            _fold_decoder_norm(tensors, w_path)
        for name in ("W_enc", "W_dec", "b_dec", *encoder_bias_names(cfg)):
            setattr(sae, name, nn.Parameter(tensors[name].to(**target)))
        dev = target["device"]
        sae.tokens_since_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=dev)
        if cfg.architecture == "jumprelu":
            sae.threshold = nn.Parameter(tensors["threshold"].to(**target))
        elif cfg.architecture == "batchtopk":
            sae.threshold = tensors["threshold"][0].to(**target)
            sae.threshold_updates = torch.ones((), dtype=torch.long, device=dev)
        return sae.eval()


# --------------------------------------------------------------------------------------------
# SAE files: cfg.json (ours and SAELens's) and the weights' header, checked before loading
# --------------------------------------------------------------------------------------------

SAELENS_ARCHITECTURE = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu",
                        "jumprelu": "jumprelu", "matryoshka": "topk", "gated": "gated"}
GATED_BIASES = ("b_gate", "r_mag", "b_mag")


def encoder_bias_names(cfg: SAEConfig) -> tuple[str, ...]:
    """The per-latent encoder vectors besides W_enc: b_enc, or a Gated SAE's three."""
    return GATED_BIASES if cfg.architecture == "gated" else ("b_enc",)
SAELENS_LAYOUT_VERSION = "6.0.0"
"""Written as `metadata.sae_lens_version`: SAELens reads the metadata block only from files
that declare 6.0 or later, and this course writes SAELens 6's layout."""
SAE_FILES = (CONFIG_FILE, WEIGHTS_FILE)
MAX_CONFIG_BYTES = 1 << 20
FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
                "F64": torch.float64}
CONFIG_DTYPES = {name: dt for dt in FLOAT_DTYPES.values()
                 for name in (str(dt), str(dt).replace("torch.", ""))}
METADATA_KEYS = (
    "model_name", "hook_name", "hook_head_index", "hook_layer", "model_class_name",
    "model_from_pretrained_kwargs", "prepend_bos", "exclude_special_tokens", "neuronpedia_id",
    "context_size", "seqpos_slice", "dataset_path", "hook_name_out", "hook_head_index_out",
    "sequence_separator_token", "disable_concat_sequences", "dataset_trust_remote_code",
)
"""SAELens's metadata keys (how the SAE was trained and where it reads): kept in cfg.extra."""
RENAMED_KEYS = {"hook_point": "hook_name", "hook_point_layer": "hook_layer",
                "hook_point_head_index": "hook_head_index", "activation_fn_str": "activation_fn"}
"""Keys of files older than SAELens 6, under the names SAELens 6 gave them."""
MATH_KEYS = (
    "architecture", "d_in", "d_sae", "expansion_factor", "dtype", "apply_b_dec_to_input",
    "normalize_activations", "reshape_activations", "k", "rescale_acts_by_decoder_norm",
    "activation_fn", "activation_fn_kwargs", "finetuning_scaling_factor", "metadata",
    "sae_course",
)
"""Keys that decide what the SAE computes: each is interpreted, or refused when unsupported."""
RECORD_KEYS = (
    "device", "sae_lens_version", "sae_lens_training_version",
    # SAELens 6 training configs
    "decoder_init_norm", "lp_norm", "l1_coefficient", "l1_warm_up_steps", "l0_coefficient",
    "l0_warm_up_steps", "jumprelu_init_threshold", "jumprelu_bandwidth",
    "jumprelu_sparsity_loss_mode", "pre_act_loss_coefficient", "jumprelu_tanh_scale",
    "use_sparse_activations", "aux_loss_coefficient", "topk_threshold_lr",
    # runner settings that files older than SAELens 6 (e.g. gpt2-small-res-jb) carry
    "is_dataset_tokenized", "use_cached_activations", "cached_activations_path",
    "n_batches_in_buffer", "total_training_tokens", "store_batch_size", "seed",
    "b_dec_init_method", "from_pretrained_path", "lr", "lr_scheduler_name", "lr_warm_up_steps",
    "train_batch_size", "use_ghost_grads", "feature_sampling_window", "feature_sampling_method",
    "resample_batches", "feature_reinit_scale", "dead_feature_window",
    "dead_feature_estimation_method", "dead_feature_threshold", "log_to_wandb", "wandb_project",
    "wandb_entity", "wandb_log_frequency", "n_checkpoints", "checkpoint_path",
    "tokens_per_buffer", "run_name", "act_store_device",
)
"""Keys that only record how an SAE was trained: accepted and not used."""
KNOWN_KEYS = frozenset(MATH_KEYS + METADATA_KEYS + RECORD_KEYS + tuple(RENAMED_KEYS))


class SAEFileError(ValueError):
    """An SAE file that cannot be loaded as it is (the message names the file, key or tensor
    and the fix) or an SAE that cannot be saved."""


@dataclass
class FileLayout:
    """What `read_config` finds in a cfg.json: the SAEConfig, and how to read the weights."""

    cfg: SAEConfig
    dtype: torch.dtype | None = None  # the dtype cfg.json declares, if any
    rescale_acts_by_decoder_norm: bool = False  # SAELens TopK: folded into the weights


def _refuse(path: Path, key: str, problem: str, fix: str) -> SAEFileError:
    return SAEFileError(f"{path}: {key!r} {problem}. Fix: {fix}.")


def _unknown_key(path: Path, key: str, known: Iterable[str]) -> SAEFileError:
    close = difflib.get_close_matches(key, list(known), n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return SAEFileError(
        f"{path}: unknown key {key!r} in cfg.json; {guess}an unknown key could change what the "
        f"SAE computes without this loader knowing. Fix: correct or remove {key!r}."
    )


def read_config(raw: Any, path: Path = Path(CONFIG_FILE)) -> FileLayout:
    """Read a cfg.json written by this course or by SAELens (6.x or older), strictly.

    Every key must be known; keys that change the computation are implemented or refused
    (normalize_activations other than "none"/"expected_average_only_in", hook_z reshaping,
    a finetuning scaling factor, architectures other than standard/topk/jumprelu/gated); a TopK
    config must give k. SAELens TopK's `rescale_acts_by_decoder_norm` is folded into the
    weights at load (exact: encode multiplies the pre-activations by the decoder row norms,
    decode divides by them). The metadata block (or its keys at the top level) goes to
    `cfg.extra`, without null values and without the SAELens version keys.
    """
    if not isinstance(raw, dict):
        raise SAEFileError(f"{path} holds a JSON {type(raw).__name__}, not an object: is it an "
                           "SAE's cfg.json?")
    for key in raw:
        if key not in KNOWN_KEYS:
            raise _unknown_key(path, key, KNOWN_KEYS)
    top = {RENAMED_KEYS.get(k, k): v for k, v in raw.items()}
    metadata = top.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _refuse(path, "metadata", "is not a JSON object", "write it as {...} or remove it")
    extra = {k: top[k] for k in METADATA_KEYS if top.get(k) is not None}
    extra.update({k: v for k, v in metadata.items()
                  if v is not None and k not in ("sae_lens_version", "sae_lens_training_version")})
    for key in ("hook_name", "model_name"):
        if key in extra and not isinstance(extra[key], str):
            raise _refuse(path, key, f"is {extra[key]!r}, not a string",
                          f"write the {key.replace('_', ' ')} as a string")
    dtype = None
    if top.get("dtype") is not None:
        if top["dtype"] not in CONFIG_DTYPES:
            raise _refuse(path, "dtype", f"is {top['dtype']!r}, not a floating-point dtype",
                          f"use one of {sorted(CONFIG_DTYPES)}")
        dtype = CONFIG_DTYPES[top["dtype"]]
    _refuse_unsupported(path, top)
    if "sae_course" in top:
        return FileLayout(_course_config(path, top, extra), dtype)
    return _saelens_config(path, top, extra, dtype)


def _refuse_unsupported(path: Path, top: dict[str, Any]) -> None:
    norm = top.get("normalize_activations")
    if norm not in (None, False, "none", "expected_average_only_in"):
        raise _refuse(
            path, "normalize_activations",
            f"is {norm!r}: this SAE would normalise each input at run time, which this course's "
            "SAE does not do (loading it would give wrong outputs)",
            "use an SAE saved with normalize_activations 'none' (or with the normalisation "
            "folded into its weights)",
        )
    if top.get("reshape_activations") not in (None, "none"):
        raise _refuse(path, "reshape_activations",
                      f"is {top['reshape_activations']!r}: the SAE reads attention heads "
                      "[..., heads, d_head], and this course's SAE reads [..., d_in] only",
                      "use an SAE of a hook that gives one vector per token")
    if top.get("finetuning_scaling_factor") not in (None, False):
        raise _refuse(path, "finetuning_scaling_factor",
                      "is set: the latents are rescaled by a learned factor this course's SAE "
                      "does not apply", "use an SAE without a finetuning scaling factor")


def _course_config(path: Path, top: dict[str, Any], extra: dict[str, Any]) -> SAEConfig:
    block = top["sae_course"]
    if not isinstance(block, dict):
        raise _refuse(path, "sae_course", "is not a JSON object", "save the SAE again")
    names = {f.name for f in dataclasses.fields(SAEConfig)}
    for key in block:
        if key not in names:
            raise _unknown_key(path, f"sae_course.{key}", [f"sae_course.{n}" for n in names])
    block = dict(block)
    extra = {**(block.pop("extra", None) or {}), **extra}  # files saved before the metadata block
    try:
        cfg = SAEConfig(**block, extra=extra)
    except (TypeError, ValueError) as err:
        raise SAEFileError(f"{path}: the sae_course block is not a valid SAEConfig ({err}). "
                           "Fix: save the SAE again.") from err
    written = {"architecture": SAELENS_ARCHITECTURE[cfg.architecture], "d_in": cfg.d_in,
               "d_sae": cfg.d_sae}
    if cfg.architecture in ("topk", "matryoshka"):
        written["k"] = cfg.k
    for key, value in written.items():
        if key in top and top[key] != value:
            raise _refuse(path, key, f"is {top[key]!r} but the sae_course block says {value!r} "
                          "(the file was edited by hand)", "make the two agree, or save again")
    return cfg


def _saelens_config(path: Path, top: dict[str, Any], extra: dict[str, Any],
                    dtype: torch.dtype | None) -> FileLayout:
    if top.get("d_sae") is None and top.get("expansion_factor") and top.get("d_in"):
        top["d_sae"] = int(top["d_in"] * top["expansion_factor"])
    for key in ("d_in", "d_sae"):
        value = top.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise _refuse(path, key, f"is {value!r}, not a positive integer",
                          f"give the SAE's {key} (is this an SAE folder?)")
    arch = top.get("architecture", "standard")
    act = top.get("activation_fn", "relu")
    kwargs = top.get("activation_fn_kwargs") or {}
    if act not in ("relu", "topk"):
        raise _refuse(path, "activation_fn", f"is {act!r}",
                      "use an SAE with a relu or topk activation")
    if act == "topk" and arch == "standard":
        arch = "topk"  # files older than SAELens 6 mark TopK by the activation function
    common = dict(d_in=top["d_in"], d_sae=top["d_sae"],
                  apply_b_dec_to_input=bool(top.get("apply_b_dec_to_input", True)), extra=extra)
    rescale = bool(top.get("rescale_acts_by_decoder_norm", False))
    if rescale and arch != "topk":
        raise _refuse(path, "rescale_acts_by_decoder_norm", f"is set for architecture {arch!r}",
                      "it belongs to TopK SAEs only; remove it")
    if arch == "topk":
        k = top.get("k", kwargs.get("k"))
        if k is None:
            raise _refuse(path, "k", "is missing for a TopK SAE (SAELens would assume 100)",
                          "add the number of active latents the SAE was trained with, "
                          'e.g. "k": 32')
        if not isinstance(k, int) or isinstance(k, bool) or not 0 < k <= top["d_sae"]:
            raise _refuse(path, "k", f"is {k!r}, not an integer in 1..d_sae={top['d_sae']}",
                          "give the k the SAE was trained with")
        return FileLayout(SAEConfig(architecture="topk", k=k, **common), dtype, rescale)
    if arch in ("standard", "relu", "jumprelu", "gated"):
        arch = {"standard": "relu"}.get(arch, arch)
        return FileLayout(SAEConfig(architecture=arch, **common), dtype)
    raise _refuse(path, "architecture", f"is {arch!r}, which this course cannot load",
                  "use a standard, topk, jumprelu or gated SAE (SAELens saves BatchTopK SAEs "
                  "for inference as jumprelu: save_inference_model)")


@contextlib.contextmanager
def _open_weights(path: Path) -> Iterator[Any]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            yield f
    except SafetensorError as err:
        raise SAEFileError(f"{path} is not a readable safetensors file ({err}). Fix: restore "
                           "the file or save the SAE again.") from err


def _check_header(f: Any, path: Path, expected: dict[str, tuple[int, ...]],
                  declared: torch.dtype | None) -> torch.dtype:
    """Compare the header's tensors with those cfg.json implies; returns their dtype."""
    names = set(f.keys())
    missing = [n for n in expected if n not in names]
    if missing:
        raise SAEFileError(f"{path} has no tensor {missing[0]!r} (it has {sorted(names)}), "
                           f"which cfg.json's SAE needs. Fix: use the weights file that belongs "
                           "to this cfg.json.")
    extra = sorted(names - set(expected))
    if extra:
        raise SAEFileError(f"{path} has tensor {extra[0]!r}, which this SAE does not use "
                           "(loading without it would compute something else). Fix: use an SAE "
                           "file without it, or check cfg.json's architecture.")
    dtypes = set()
    for name, shape in expected.items():
        sl = f.get_slice(name)
        got, kind = tuple(sl.get_shape()), sl.get_dtype()
        if kind not in FLOAT_DTYPES:
            raise SAEFileError(f"{path}: tensor {name!r} has dtype {kind}, not floating point. "
                               "Fix: save the SAE's weights as float32, float16 or bfloat16.")
        if got != shape:
            raise SAEFileError(f"{path}: tensor {name!r} has shape {got}, but cfg.json "
                               f"(d_in, d_sae) implies {shape}. Fix: use the cfg.json that "
                               "belongs to these weights.")
        dtypes.add(FLOAT_DTYPES[kind])
    if len(dtypes) > 1 or (declared is not None and dtypes != {declared}):
        found = ", ".join(sorted(str(d) for d in dtypes))
        raise SAEFileError(f"{path}: the tensors are {found} but cfg.json says dtype "
                           f"{declared}. Fix: use the cfg.json that belongs to these weights.")
    return dtypes.pop()


def _check_values(tensors: dict[str, Tensor], path: Path, cfg: SAEConfig) -> None:
    for name, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise SAEFileError(f"{path}: tensor {name!r} holds NaN or Inf values. Fix: use a "
                               "checkpoint from before training diverged.")
    if "threshold" not in tensors:
        return
    threshold = tensors["threshold"]
    if bool((threshold < 0).any()):
        raise SAEFileError(f"{path}: tensor 'threshold' has negative values, where SAELens "
                           "and this course disagree on the output. Fix: clamp it at 0.")
    if cfg.architecture == "batchtopk" and not bool((threshold == threshold[0]).all()):
        raise SAEFileError(f"{path}: a BatchTopK SAE has one threshold, but 'threshold' holds "
                           "different values. Fix: save the SAE again.")


def _fold_decoder_norm(tensors: dict[str, Tensor], path: Path) -> None:
    """SAELens TopK with rescale_acts_by_decoder_norm, as plain TopK: scale W_enc's columns
    and b_enc by the decoder row norms, and the rows to unit norm (what SAELens's own
    `fold_W_dec_norm` does)."""
    norms = tensors["W_dec"].norm(dim=-1)
    if bool((norms == 0).any()):
        raise SAEFileError(f"{path}: 'W_dec' has a zero row, which rescale_acts_by_decoder_norm "
                           "divides by. Fix: remove that latent or retrain.")
    tensors["W_dec"] = tensors["W_dec"] / norms[:, None]
    tensors["W_enc"] = tensors["W_enc"] * norms
    tensors["b_enc"] = tensors["b_enc"] * norms


# --------------------------------------------------------------------------------------------
# Dead latents: resampling (Bricken et al. 2023)
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def resample_dead_latents(
    sae: SAE, x: Tensor, dead_mask: Tensor | None = None,
    optimizer: torch.optim.Optimizer | None = None, generator: torch.Generator | None = None,
    encoder_scale: float = 0.2,
) -> int:
    """Re-initialise dead latents toward inputs the SAE reconstructs badly; returns how many.

    Following Bricken et al. 2023 ("Towards Monosemanticity", appendix on resampling): pick
    inputs with probability proportional to their squared reconstruction loss; each dead
    latent's decoder row becomes the chosen input (minus b_dec) normalised, its encoder column
    that direction times `encoder_scale` times the mean encoder norm of the live latents, its
    bias 0; its Adam moments are reset and its dead-tracker restarts.
    """
    if dead_mask is None:
        dead_mask = sae.dead_mask()
    dead = torch.nonzero(dead_mask).reshape(-1)
    n = dead.numel()
    if n == 0:
        return 0
    sae.check_input(x)
    x = x.reshape(-1, sae.cfg.d_in)
    was_training = sae.training
    sae.eval()
    x_hat = sae(x, sparse=False).x_hat
    sae.train(was_training)
    loss = (x - x_hat).pow(2).sum(-1).double()
    probs = loss.pow(2)
    if not torch.isfinite(probs.sum()) or probs.sum() <= 0:
        probs = torch.ones_like(probs)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    choice = torch.multinomial(probs.to(gen_device), n, replacement=True, generator=generator)
    directions = normalize_rows(x[choice.to(x.device)] - sae.b_dec)
    alive = ~dead_mask
    enc_norms = sae.W_enc.norm(dim=0)
    scale = enc_norms[alive].mean() if bool(alive.any()) else enc_norms.new_ones(())
    sae.W_dec[dead] = directions
    sae.W_enc[:, dead] = directions.t() * (scale * encoder_scale)
    biases = [getattr(sae, name) for name in encoder_bias_names(sae.cfg)]
    for b in biases:  # b_enc (a Gated SAE: b_gate, b_mag, and r_mag = 0, a scale of 1)
        b[dead] = 0.0
    if optimizer is not None:
        targets = ((sae.W_dec, (dead,)), (sae.W_enc, (slice(None), dead)),
                   *((b, (dead,)) for b in biases))
        for p, index in targets:
            state = optimizer.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][index] = 0.0
    sae.tokens_since_fired[dead] = 0
    return n
