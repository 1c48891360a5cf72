"""Checks for notebook 02, SAEs on toy models.

Each `test_<exercise>` compares the learner's code with the reference in `sae_course.sae` /
`sae_course.evaluation` on seeded random inputs and edge cases, and names the known mistake
when the answer matches one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sae_course import evaluation as ev
from sae_course import sae as ref
from sae_course.checks.harness import CheckFailed, call, compare, passed, require, seeded_generator

# --------------------------------------------------------------------------- relu_encode


def test_relu_encode(relu_encode: Callable) -> None:
    ex = "relu_encode"
    cases = [(5, 4, 7), (1, 3, 3), (8, 6, 12)]
    for seed, (n, d_in, d_sae) in enumerate(cases):
        g = seeded_generator(seed)
        x = torch.randn(n, d_in, generator=g)
        W_enc = torch.randn(d_in, d_sae, generator=g)
        b_enc = torch.randn(d_sae, generator=g) * 0.5
        b_dec = torch.randn(d_in, generator=g)
        expected = ref.relu_encode(x, W_enc, b_enc, b_dec)
        got = call(ex, relu_encode, x.clone(), W_enc.clone(), b_enc.clone(), b_dec.clone())
        compare(got, expected, exercise=ex, what=f"the latents for {n} tokens", mistakes={
            "you do not subtract b_dec from x before encoding": torch.relu(x @ W_enc + b_enc),
            "you add b_dec instead of subtracting it": torch.relu((x + b_dec) @ W_enc + b_enc),
            "the ReLU is missing": (x - b_dec) @ W_enc + b_enc,
            "you add b_enc after the ReLU": torch.relu((x - b_dec) @ W_enc) + b_enc,
            "you forgot b_enc": torch.relu((x - b_dec) @ W_enc),
        })
    # edge case: x equal to b_dec -> relu(b_enc)
    b_dec = torch.randn(4, generator=seeded_generator(9))
    b_enc = torch.tensor([0.5, -0.5, 0.0])
    got = call(ex, relu_encode, b_dec[None].clone(), torch.randn(4, 3), b_enc, b_dec)
    compare(got, torch.relu(b_enc)[None], exercise=ex,
            what="the latents of the input x = b_dec (should be ReLU(b_enc))")
    passed(ex, "matches the reference on 3 random cases and x = b_dec")


# --------------------------------------------------------------------------- l1_loss


def test_l1_loss(l1_loss: Callable) -> None:
    ex = "l1_loss"
    for seed, (n, d_sae, d_in) in enumerate([(9, 7, 7), (6, 10, 4), (1, 5, 3)]):
        g = seeded_generator(seed)
        latents = torch.relu(torch.randn(n, d_sae, generator=g))
        W_dec = torch.randn(d_sae, d_in, generator=g) * 2
        coef = 0.3 + seed
        for weighted in (True, False):
            expected = coef * ref.l1_penalty(latents, W_dec if weighted else None).mean()
            got = call(ex, l1_loss, latents.clone(), W_dec.clone(), coef, weighted)
            norms0 = W_dec.norm(dim=0)
            mistakes = {
                "you average over latents instead of summing them": coef * (
                    latents * (W_dec.norm(dim=-1) if weighted else 1)).mean(),
                "you sum over tokens instead of averaging": coef * (
                    latents * (W_dec.norm(dim=-1) if weighted else 1)).sum(),
                "you forgot the coefficient": ref.l1_penalty(
                    latents, W_dec if weighted else None).mean(),
            }
            if weighted:
                mistakes["you did not weight by the decoder row norms"] = (
                    coef * ref.l1_penalty(latents).mean())
                mistakes["you weight by squared decoder norms"] = coef * (
                    latents * W_dec.pow(2).sum(-1)).sum(-1).mean()
                if d_sae == d_in:
                    mistakes["you took the norms over the wrong dimension (columns)"] = coef * (
                        latents * norms0).sum(-1).mean()
            else:
                mistakes["you weighted by the decoder norms though weighted=False"] = (
                    coef * ref.l1_penalty(latents, W_dec).mean())
            compare(got, expected, exercise=ex,
                    what=f"the loss (weighted={weighted}, {n} tokens, d_sae={d_sae})",
                    mistakes=mistakes)
            require(got.dim() == 0, ex, "the loss should be a scalar (0-dim tensor).")
    # signed latents (e.g. before a ReLU): the L1 takes absolute values
    latents = torch.randn(5, 6, generator=seeded_generator(11))
    W_dec = torch.randn(6, 3, generator=seeded_generator(12))
    for weighted in (True, False):
        W = W_dec if weighted else None
        compare(call(ex, l1_loss, latents.clone(), W_dec.clone(), 0.5, weighted),
                0.5 * ref.l1_penalty(latents, W).mean(), exercise=ex,
                what=f"the loss of signed latents (weighted={weighted})", mistakes={
                    "you forgot the absolute value": 0.5 * (
                        latents * (W_dec.norm(dim=-1) if weighted else 1)).sum(-1).mean()})
    got = call(ex, l1_loss, torch.zeros(3, 4), torch.randn(4, 2), 1.0, True)
    compare(got, torch.tensor(0.0), exercise=ex, what="the loss of all-zero latents")
    passed(ex, "matches the reference, weighted and unweighted, on 3 random cases")


# --------------------------------------------------------------------------- remove_parallel_grad


def test_remove_parallel_grad(remove_parallel_grad: Callable) -> None:
    ex = "remove_parallel_grad"
    for seed, (d_sae, d_in, unit) in enumerate([(6, 4, True), (5, 5, False), (3, 8, False)]):
        g = seeded_generator(seed)
        W_dec = torch.randn(d_sae, d_in, generator=g)
        if unit:
            W_dec = ref.normalize_rows(W_dec)
        else:
            W_dec = W_dec * torch.rand(d_sae, 1, generator=g).add(0.5) * 3
        grad = torch.randn(d_sae, d_in, generator=g)
        expected = ref.remove_parallel_component(W_dec, grad)
        got = call(ex, remove_parallel_grad, W_dec.clone(), grad.clone())
        u0 = W_dec / W_dec.norm(dim=0, keepdim=True)
        compare(got, expected, exercise=ex,
                what=f"the projected gradient ({'unit' if unit else 'non-unit'} rows)",
                mistakes={
                    "you did not normalise W_dec's rows before projecting": grad - (
                        grad * W_dec).sum(-1, keepdim=True) * W_dec,
                    "you add the parallel component instead of removing it": grad + (
                        expected - grad) * -1,
                    "you returned only the parallel component": grad - expected,
                    "you normalised over the wrong dimension (columns)": grad - (
                        grad * u0).sum(-1, keepdim=True) * u0,
                    "you returned the gradient unchanged": grad,
                    "you normalised W_dec only once (use the unit rows on both sides)": grad - (
                        grad * W_dec).sum(-1, keepdim=True) * W_dec / W_dec.norm(
                        dim=-1, keepdim=True),
                })
        dots = (got * W_dec).sum(-1).abs().max()
        require(float(dots) < 1e-4, ex, "the result still has a component along W_dec's rows.")
    passed(ex, "removes exactly the component along each decoder row (unit and non-unit rows)")


# --------------------------------------------------------------------------- topk_activation


def test_topk_activation(topk_activation: Callable) -> None:
    ex = "topk_activation"
    for seed, (n, d_sae, k) in enumerate([(5, 10, 3), (1, 6, 1), (7, 8, 8)]):
        pre = torch.randn(n, d_sae, generator=seeded_generator(seed)) * 2
        expected = ref.topk_activation(pre, k)
        got = call(ex, topk_activation, pre.clone(), k)
        v, i = pre.topk(k, dim=-1)
        _, i_abs = pre.abs().topk(k, dim=-1)
        mistakes = {
            "the ReLU is missing (negative values among the top k survive)":
                torch.zeros_like(pre).scatter(-1, i, v),
            "you pick the k largest |values| instead of the k largest values":
                torch.zeros_like(pre).scatter(-1, i_abs, torch.relu(pre.gather(-1, i_abs))),
            "you keep the k largest per latent (over tokens) instead of per token":
                _topk_dim0(pre, k),
            "you return the ReLU of everything (no top-k)": torch.relu(pre),
        }
        compare(got, expected, exercise=ex, what=f"the latents (k={k}, d_sae={d_sae})",
                mistakes=mistakes)
    # all negative: every latent is 0
    pre = -torch.rand(3, 5, generator=seeded_generator(5)) - 0.1
    compare(call(ex, topk_activation, pre.clone(), 2), torch.zeros(3, 5), exercise=ex,
            what="the latents of all-negative pre-activations (should all be 0)",
            mistakes={"the ReLU is missing": torch.zeros_like(pre).scatter(
                -1, pre.topk(2, -1).indices, pre.topk(2, -1).values)})
    passed(ex, "keeps the k largest per token (ReLU'd) on 3 random cases and negatives")


def _topk_dim0(pre: Tensor, k: int) -> Tensor:
    kk = min(k, pre.shape[0])
    v, i = pre.topk(kk, dim=0)
    return torch.zeros_like(pre).scatter(0, i, torch.relu(v))


# --------------------------------------------------------------------------- auxk_loss


def test_auxk_loss(auxk_loss: Callable) -> None:
    ex = "auxk_loss"
    for seed, (n, d_sae, d_in, n_dead, k_aux) in enumerate(
        [(6, 12, 4, 5, 3), (4, 10, 3, 2, 256), (1, 8, 5, 8, 4)]
    ):
        g = seeded_generator(seed)
        pre = torch.randn(n, d_sae, generator=g)
        W_dec = torch.randn(d_sae, d_in, generator=g)
        residual = torch.randn(n, d_in, generator=g)
        dead = torch.zeros(d_sae, dtype=torch.bool)
        dead[torch.randperm(d_sae, generator=g)[:n_dead]] = True
        expected = ref.auxk_loss(residual, pre, W_dec, dead, k_aux)
        try:
            got = call(ex, auxk_loss, residual.clone(), pre.clone(), W_dec.clone(),
                       dead.clone(), k_aux)
        except CheckFailed as err:
            if k_aux > n_dead:
                raise CheckFailed(f"{err} Here k_aux={k_aux} but only {n_dead} latents are "
                                  "dead: cap k_aux at the number of dead latents.") from err
            raise
        k_eff = min(k_aux, n_dead, d_sae)
        all_lat = ref.topk_activation(pre, k_eff)
        masked = pre.masked_fill(~dead, float("-inf"))
        v, i = masked.topk(k_eff, dim=-1)
        no_relu = torch.zeros_like(pre).scatter(-1, i, v)
        compare(got, expected, exercise=ex,
                what=f"the AuxK loss ({n_dead} dead of {d_sae}, k_aux={k_aux})", mistakes={
                    "you take the top k_aux over all latents, not just the dead ones":
                        (residual - all_lat @ W_dec).pow(2).sum(-1).mean(),
                    "the ReLU on the aux latents is missing":
                        (residual - no_relu @ W_dec).pow(2).sum(-1).mean(),
                    "you average the squared error over dimensions instead of summing":
                        (residual - _aux_lat(pre, dead, k_eff) @ W_dec).pow(2).mean(),
                    "you reconstruct x - residual instead of the residual":
                        (residual + _aux_lat(pre, dead, k_eff) @ W_dec).pow(2).sum(-1).mean(),
                })
        require(got.dim() == 0, ex, "the loss should be a scalar.")
    # no dead latents -> 0
    got = call(ex, auxk_loss, torch.randn(3, 4), torch.randn(3, 6), torch.randn(6, 4),
               torch.zeros(6, dtype=torch.bool), 4)
    compare(got, torch.tensor(0.0), exercise=ex,
            what="the loss when no latent is dead (should be 0)")
    # the gradient must not flow into the residual
    residual = torch.randn(3, 4, requires_grad=True)
    dead = torch.tensor([True, False, True, False, True, True])
    out = call(ex, auxk_loss, residual, torch.randn(3, 6), torch.randn(6, 4), dead, 2)
    if out.requires_grad:
        out.backward()
    require(residual.grad is None or float(residual.grad.abs().sum()) == 0, ex,
            "the residual should be detached: the AuxK loss must not train the main "
            "reconstruction (use residual.detach()).")
    passed(ex, "matches the reference, caps k_aux at the number of dead latents, detaches")


def _aux_lat(pre: Tensor, dead: Tensor, k: int) -> Tensor:
    return torch.nan_to_num(ref.topk_activation(pre.masked_fill(~dead, float("-inf")), k),
                            neginf=0.0)


# --------------------------------------------------------------------------- batchtopk


def test_batchtopk_activation(batchtopk_activation: Callable) -> None:
    ex = "batchtopk_activation"
    for seed, (n, d_sae, k) in enumerate([(6, 10, 2), (1, 7, 3), (5, 4, 4)]):
        pre = torch.randn(n, d_sae, generator=seeded_generator(seed)) * 2
        expected = ref.batchtopk_activation(pre, k)
        got = call(ex, batchtopk_activation, pre.clone(), k)
        flat = pre.reshape(-1)
        v, i = flat.topk(k * n)
        mistakes = {
            "you keep k per token (TopK), not batch_size * k over the batch":
                ref.topk_activation(pre, k),
            "you keep only k over the whole batch, not batch_size * k":
                torch.zeros_like(flat).scatter(0, flat.topk(k).indices,
                                               torch.relu(flat.topk(k).values)).reshape(pre.shape),
            "the ReLU is missing": torch.zeros_like(flat).scatter(0, i, v).reshape(pre.shape),
        }
        compare(got, expected, exercise=ex, what=f"the latents ({n} tokens, k={k})",
                mistakes=mistakes)
    # uneven batch: one token gets many latents, another none
    pre = torch.tensor([[5.0, 4.0, 3.0, 2.0], [-1.0, -2.0, 0.5, -3.0]])
    compare(call(ex, batchtopk_activation, pre.clone(), 2), ref.batchtopk_activation(pre, 2),
            exercise=ex, what="the latents when one token holds all the large values",
            mistakes={"you keep k per token (TopK)": ref.topk_activation(pre, 2)})
    passed(ex, "keeps the batch_size * k largest over the batch on random and uneven cases")


# --------------------------------------------------------------------------- JumpReLU


def test_jumprelu_function(JumpReLUFunction) -> None:
    ex = "JumpReLUFunction"
    require(hasattr(JumpReLUFunction, "apply"), ex,
            "JumpReLUFunction should subclass torch.autograd.Function.")
    for seed, (n, d_sae, bw) in enumerate([(64, 6, 0.5), (32, 4, 0.2), (1, 5, 1.0)]):
        g = seeded_generator(seed)
        z = torch.randn(n, d_sae, generator=g, dtype=torch.float64)
        theta = (torch.rand(d_sae, generator=g, dtype=torch.float64) * 0.8 + 0.1)
        upstream = torch.randn(n, d_sae, generator=g, dtype=torch.float64)
        z1, t1 = z.clone().requires_grad_(True), theta.clone().requires_grad_(True)
        z2, t2 = z.clone().requires_grad_(True), theta.clone().requires_grad_(True)
        out = call(ex, JumpReLUFunction.apply, z1, t1, bw)
        expected = ref.JumpReLUFunction.apply(z2, t2, bw)
        compare(out, expected, exercise=ex, what="the forward output", mistakes={
            "you return H(z - theta) (the step) instead of z * H(z - theta)":
                (z > theta).double(),
            "you return ReLU(z - theta) (shifted) instead of z * H(z - theta)":
                torch.relu(z - theta),
        })
        call(ex, lambda o, u=upstream: (o * u).sum().backward(), out)
        (expected * upstream).sum().backward()
        require(z1.grad is not None and t1.grad is not None, ex,
                "backward must return gradients for z and threshold (and None for bandwidth).")
        inside = ((z - theta).abs() < bw / 2).double()
        compare(z1.grad, z2.grad, exercise=ex, what="the gradient with respect to z", mistakes={
            "you pass the gradient to z everywhere (it should be masked by H(z - theta))":
                upstream,
        })
        wide = ((z - theta).abs() < bw).double()
        compare(t1.grad, t2.grad, exercise=ex, what="the gradient with respect to the threshold",
                mistakes={
                    "you used -(1/bandwidth) K(...) (the Heaviside's pseudo-derivative) without "
                    "the factor theta": -(1 / bw * inside * upstream).sum(0),
                    "the sign is flipped (raising theta should lower the output)":
                        (theta / bw * inside * upstream).sum(0),
                    "your rectangle is 2x too wide: K is 1 on |z - theta| < bandwidth/2":
                        -(theta / bw * wide * upstream).sum(0),
                    "you did not multiply by the incoming gradient":
                        -(theta / bw * inside).sum(0),
                })
    passed(ex, "forward and both straight-through gradients match the reference")


# --------------------------------------------------------------------------- MMCS


def test_mean_max_cosine_similarity(mean_max_cosine_similarity: Callable) -> None:
    ex = "mean_max_cosine_similarity"
    for seed, (n_feat, d_sae, d) in enumerate([(5, 8, 4), (6, 3, 5), (4, 4, 4)]):
        g = seeded_generator(seed)
        true = torch.randn(n_feat, d, generator=g) * 3
        W_dec = torch.randn(d_sae, d, generator=g) * torch.rand(d_sae, 1, generator=g).add(0.2)
        expected = ev.mean_max_cosine_similarity(true, W_dec)
        got = call(ex, mean_max_cosine_similarity, true.clone(), W_dec.clone())
        cos = ev.cosine_matrix(true, W_dec)
        compare(got, expected, exercise=ex, what=f"MMCS ({n_feat} features, d_sae={d_sae})",
                mistakes={
                    "you take, for each decoder row, its best feature (max over the wrong axis)":
                        cos.max(0).values.mean(),
                    "you did not normalise (dot products, not cosines)":
                        (true @ W_dec.t()).max(-1).values.mean(),
                    "you used |cosine|: an anti-aligned row does not represent the feature":
                        cos.abs().max(-1).values.mean(),
                    "you average all cosines instead of taking each feature's best":
                        cos.mean(),
                    "you normalised W_dec over the wrong dimension (columns)":
                        ((true / true.norm(dim=-1, keepdim=True))
                         @ (W_dec / W_dec.norm(dim=0, keepdim=True)).t()).max(-1).values.mean(),
                })
        require(got.dim() == 0, ex, "MMCS should be a scalar.")
    # a decoder holding every feature (rescaled, plus extra rows) scores 1
    true = torch.randn(3, 4, generator=seeded_generator(7))
    W_dec = torch.cat([true * 5, -true])
    compare(call(ex, mean_max_cosine_similarity, true, W_dec), torch.tensor(1.0), exercise=ex,
            what="MMCS when every feature is a (rescaled) decoder row",
            mistakes={"you average over decoder rows": ev.cosine_matrix(true, W_dec)
                      .max(0).values.mean()})
    passed(ex, "matches the reference on 3 random cases and a perfect dictionary")


# --------------------------------------------------------------------------- geometric median


def test_geometric_median(geometric_median: Callable) -> None:
    ex = "geometric_median"
    n_iter = 200
    cases = []
    for seed, (n, d) in enumerate([(20, 3), (7, 2), (50, 5)]):
        g = seeded_generator(seed)
        pts = torch.randn(n, d, generator=g, dtype=torch.float64)
        pts[0] = pts[0] * 20  # an outlier
        cases.append(pts)
    # the mean coincides with one of the points (the 1/distance weight must be guarded)
    cases.append(torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]],
                              dtype=torch.float64))
    for pts in cases:
        expected = ref.geometric_median(pts, max_iter=n_iter, tol=0.0)
        got = call(ex, geometric_median, pts.clone(), n_iter)
        mean = pts.mean(0)
        wrong_sq = mean.clone()
        for _ in range(n_iter):
            w = 1 / (pts - wrong_sq).norm(dim=-1).clamp_min(1e-8) ** 2
            wrong_sq = (w[:, None] * pts).sum(0) / w.sum()
        require(not torch.isnan(got).any(), ex,
                f"the median of {len(pts)} points contains NaN: when the estimate lands exactly "
                "on a data point its distance is 0 and 1/0 breaks the weights; clamp the "
                "distances at 1e-8 before dividing.")
        wrong_d = mean.clone()
        wrong_mean = mean.clone()
        for _ in range(n_iter):
            w = (pts - wrong_d).norm(dim=-1).clamp_min(1e-8)
            wrong_d = (w[:, None] * pts).sum(0) / w.sum()
            w = 1 / (pts - wrong_mean).norm(dim=-1).clamp_min(1e-8)
            wrong_mean = (w[:, None] * pts).mean(0)
        compare(got, expected, exercise=ex, what=f"the median of {len(pts)} points",
                atol=1e-4, rtol=1e-3, mistakes={
                    "you weighted by the distance instead of 1 / distance": wrong_d,
                    "you did not divide by the sum of the weights": wrong_mean,
                    "you returned the mean": mean,
                    "you weighted by 1 / distance^2 instead of 1 / distance": wrong_sq,
                    "you returned the coordinate-wise median": pts.median(0).values,
                })
    passed(ex, "Weiszfeld converges to the reference on 4 cases (outliers, a point at the mean)")


__all__ = [
    "CheckFailed",
    "test_auxk_loss",
    "test_batchtopk_activation",
    "test_geometric_median",
    "test_jumprelu_function",
    "test_l1_loss",
    "test_mean_max_cosine_similarity",
    "test_relu_encode",
    "test_remove_parallel_grad",
    "test_topk_activation",
]
