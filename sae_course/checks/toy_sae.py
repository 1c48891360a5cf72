"""Checks for notebook 02, SAEs on toy models.

Each `test_<exercise>` compares the learner's code with the reference in `sae_course.sae` /
`sae_course.evaluation` on seeded random inputs and edge cases, and names the known mistake
when the answer matches one. Beyond the values, the checks look at what wrong code often gets
wrong while the numbers still match: gradients (for every output that feeds training), inputs
changed in place, the dtype of the result, ties in the top-k exercises, and the iteration
count and starting point of the geometric median.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from sae_course import evaluation as ev
from sae_course import sae as ref
from sae_course.checks.harness import CheckFailed, call, compare, passed, require, seeded_generator
from sae_course.settings import cpu_threads
from sae_course.synthetic import SyntheticFeatures


def _one_thread(check: Callable) -> Callable:
    """Run a check with 1 torch thread: its tensors are tiny, and on a shared machine extra
    threads only spin-wait (see settings.cpu_threads)."""
    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> None:
        with cpu_threads(1):
            check(*args, **kwargs)

    return run

# --------------------------------------------------------------------------- shared helpers


def _call_on_copies(ex: str, fn: Callable, args: Sequence[Any], names: Sequence[str]) -> Any:
    """Call fn on copies of the tensor arguments; fail if it changed any of them in place."""
    copies = [a.clone() if isinstance(a, Tensor) else a for a in args]
    got = call(ex, fn, *copies)
    for name, a, c in zip(names, args, copies, strict=True):
        if isinstance(a, Tensor):
            require(torch.equal(a, c), ex,
                    f"your code changed `{name}` in place (an operation ending in _ such as "
                    "sub_ or masked_fill_, or x -= ...); work on new tensors and leave the "
                    "inputs as they were: the caller still needs them.")
    return got


def _same_dtype(ex: str, got: Any, dtype: torch.dtype, what: str) -> None:
    if isinstance(got, Tensor):
        require(got.dtype == dtype, ex,
                f"{what} is {got.dtype} but the inputs are {dtype}: keep the input's dtype "
                "(e.g. torch.zeros_like(pre), not torch.zeros(pre.shape); no .float()).")


def _grad_check(ex: str, fn: Callable, ref_fn: Callable, args: Sequence[Any],
                names: Sequence[str], wrt: Sequence[int], what: str, seed: int = 0,
                grad_mistakes: dict[str, dict[str, Tensor]] | None = None) -> None:
    """Backpropagate a random weighting of the output through fn and through the reference;
    the gradients reaching the arguments in `wrt` must agree."""
    def leaves() -> list[Any]:
        return [a.detach().clone().requires_grad_(i in wrt) if isinstance(a, Tensor) else a
                for i, a in enumerate(args)]

    mine, theirs = leaves(), leaves()
    out = call(ex, fn, *mine)
    expected = ref_fn(*theirs)
    require(isinstance(out, Tensor), ex, f"{what} should be a tensor.")
    require(out.requires_grad, ex,
            f"no gradient flows back through {what}: training needs it. Look for a stray "
            ".detach(), torch.no_grad(), .item() or a new tensor built from .tolist().")
    weights = torch.randn(expected.shape, generator=seeded_generator(seed), dtype=expected.dtype)
    call(ex, lambda: (out * weights).sum().backward())
    (expected * weights).sum().backward()
    for i in wrt:
        grad = mine[i].grad
        require(grad is not None, ex,
                f"no gradient reaches `{names[i]}` through {what} (a stray .detach()?).")
        compare(grad, theirs[i].grad, exercise=ex,
                what=f"the gradient of {what} with respect to `{names[i]}`",
                mistakes=(grad_mistakes or {}).get(names[i]))


# --------------------------------------------------------------------------- MMCS


@_one_thread
def test_mean_max_cosine_similarity(mean_max_cosine_similarity: Callable) -> None:
    ex = "mean_max_cosine_similarity"
    names = ("true_features", "W_dec")
    for seed, (n_feat, d_sae, d, dtype) in enumerate(
            [(5, 8, 4, torch.float32), (6, 3, 5, torch.float64), (4, 4, 4, torch.float32)]):
        g = seeded_generator(seed)
        true = torch.randn(n_feat, d, generator=g, dtype=dtype) * 3
        W_dec = (torch.randn(d_sae, d, generator=g, dtype=dtype)
                 * torch.rand(d_sae, 1, generator=g, dtype=dtype).add(0.2))
        expected = ev.mean_max_cosine_similarity(true, W_dec)
        got = _call_on_copies(ex, mean_max_cosine_similarity, (true, W_dec), names)
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
        _same_dtype(ex, got, dtype, "MMCS")
    # a decoder holding every feature (rescaled, plus extra rows) scores 1
    true = torch.randn(3, 4, generator=seeded_generator(7))
    W_dec = torch.cat([true * 5, -true])
    compare(_call_on_copies(ex, mean_max_cosine_similarity, (true, W_dec), names),
            torch.tensor(1.0), exercise=ex,
            what="MMCS when every feature is a (rescaled) decoder row",
            mistakes={"you average over decoder rows": ev.cosine_matrix(true, W_dec)
                      .max(0).values.mean()})
    passed(ex, "matches the reference on 3 random cases (float32 and float64) and a perfect "
               "dictionary, leaving its inputs unchanged")


# --------------------------------------------------------------------------- relu_sae_forward

_RELU = ("x", "W_enc", "b_enc", "W_dec", "b_dec", "sparsity_coefficient", "weighted")


def _relu_ref(x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor,
              coef: float, weighted: bool) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """The library's ReLU SAE pieces: (latents, x_hat, {"mse", "l1"})."""
    latents = ref.relu_encode(x, W_enc, b_enc, b_dec)
    x_hat = latents @ W_dec + b_dec
    return latents, x_hat, {"mse": (x_hat - x).pow(2).sum(-1).mean(),
                            "l1": coef * ref.l1_penalty(latents, W_dec if weighted else None)
                            .mean()}


def _relu_output(ex: str, got: Any) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    require(isinstance(got, tuple) and len(got) == 3 and isinstance(got[2], dict), ex,
            "return a triple (latents, x_hat, losses) with losses a dict "
            "{'mse': ..., 'l1': ...}.")
    require(set(got[2]) == {"mse", "l1"}, ex,
            f"the losses dict should have exactly the keys ['mse', 'l1'], got {sorted(got[2])}.")
    return got


def _relu_mistakes(x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor,
                   coef: float, weighted: bool) -> dict[str, dict[str, Tensor]]:
    """What known mistakes give, for each output: {output: {description: value}}."""
    latents, x_hat, _ = _relu_ref(x, W_enc, b_enc, W_dec, b_dec, coef, weighted)
    norms = W_dec.norm(dim=-1) if weighted else 1
    l1 = {
        "you average over latents instead of summing them": coef * (latents * norms).mean(),
        "you sum over tokens instead of averaging": coef * (latents * norms).sum(),
        "you forgot the coefficient": (latents * norms).sum(-1).mean(),
    }
    if weighted:
        l1["you did not weight by the decoder row norms"] = coef * latents.sum(-1).mean()
        l1["you weight by squared decoder norms"] = coef * (
            latents * W_dec.pow(2).sum(-1)).sum(-1).mean()
        if W_dec.shape[0] == W_dec.shape[1]:
            l1["you took the norms over the wrong dimension (columns)"] = coef * (
                latents * W_dec.norm(dim=0)).sum(-1).mean()
    else:
        l1["you weighted by the decoder norms though weighted=False"] = coef * (
            latents * W_dec.norm(dim=-1)).sum(-1).mean()
    return {
        "latents": {
            "you do not subtract b_dec from x before encoding": torch.relu(x @ W_enc + b_enc),
            "you add b_dec instead of subtracting it": torch.relu((x + b_dec) @ W_enc + b_enc),
            "the ReLU is missing": (x - b_dec) @ W_enc + b_enc,
            "you add b_enc after the ReLU": torch.relu((x - b_dec) @ W_enc) + b_enc,
            "you forgot b_enc": torch.relu((x - b_dec) @ W_enc),
        },
        "x_hat": {
            "the decoder leaves out b_dec": latents @ W_dec,
            "you decode with W_enc transposed (tied weights) instead of W_dec":
                latents @ W_enc.t() + b_dec,
        },
        "mse": {
            "you average the squared error over the dimensions instead of summing them":
                (x_hat - x).pow(2).mean(),
            "you sum the squared error over the tokens instead of averaging":
                (x_hat - x).pow(2).sum(),
            "you take the norm of the error, not its square": (x_hat - x).norm(dim=-1).mean(),
        },
        "l1": l1,
    }


def _relu_case(seed: int, n: int, d_in: int, d_sae: int, dtype: torch.dtype) -> list[Tensor]:
    g = seeded_generator(seed)
    return [torch.randn(n, d_in, generator=g, dtype=dtype),
            torch.randn(d_in, d_sae, generator=g, dtype=dtype),
            torch.randn(d_sae, generator=g, dtype=dtype) * 0.5,
            torch.randn(d_sae, d_in, generator=g, dtype=dtype) * 2,
            torch.randn(d_in, generator=g, dtype=dtype)]


@_one_thread
def test_relu_sae_forward(relu_sae_forward: Callable) -> None:
    ex = "relu_sae_forward"
    cases = [(5, 4, 7, 0.3, torch.float32), (1, 3, 3, 1.3, torch.float64),
             (8, 6, 6, 2.3, torch.float32)]
    for seed, (n, d_in, d_sae, coef, dtype) in enumerate(cases):
        for weighted in (True, False):
            args = (*_relu_case(seed, n, d_in, d_sae, dtype), coef, weighted)
            latents_ref, x_hat_ref, losses_ref = _relu_ref(*args)
            latents, x_hat, losses = _relu_output(
                ex, _call_on_copies(ex, relu_sae_forward, args, _RELU))
            wrong = _relu_mistakes(*args)
            what = f"({n} tokens, d_sae={d_sae}, coefficient {coef}, weighted={weighted})"
            for name, got, expected in (("latents", latents, latents_ref),
                                        ("x_hat", x_hat, x_hat_ref),
                                        ("mse", losses["mse"], losses_ref["mse"]),
                                        ("l1", losses["l1"], losses_ref["l1"])):
                label = name if name in ("latents", "x_hat") else f"the {name!r} term"
                compare(got, expected, exercise=ex, what=f"{label} {what}",
                        mistakes=wrong[name])
                _same_dtype(ex, got, dtype, label)
            mix = torch.rand(2, generator=seeded_generator(50 + seed), dtype=dtype) + 0.5

            def total(*a, fn, mix=mix):
                lat, xh, terms = _relu_output(ex, fn(*a))
                return (lat.sum(-1).mean() + xh.sum(-1).mean() + mix[0] * terms["mse"]
                        + mix[1] * terms["l1"])

            _grad_check(ex, lambda *a: total(*a, fn=relu_sae_forward),
                        lambda *a: total(*a, fn=_relu_ref), args, _RELU, wrt=range(5),
                        what=f"a mix of the outputs {what}", seed=seed)
    # edge case: x equal to b_dec -> latents ReLU(b_enc)
    x, W_enc, _, W_dec, b_dec = _relu_case(9, 1, 4, 3, torch.float32)
    b_enc = torch.tensor([0.5, -0.5, 0.0])
    latents, _, _ = _relu_output(ex, _call_on_copies(
        ex, relu_sae_forward, (b_dec[None].clone(), W_enc, b_enc, W_dec, b_dec, 1.0, True),
        _RELU))
    compare(latents, torch.relu(b_enc)[None], exercise=ex,
            what="the latents of the input x = b_dec (should be ReLU(b_enc))")
    passed(ex, "latents, x_hat, both loss terms, dtypes and the gradients to all 5 tensors match "
               "the reference on 3 cases, weighted and unweighted, for 3 coefficients, and "
               "x = b_dec; inputs left unchanged")


# --------------------------------------------------------------------------- remove_parallel_grad


@_one_thread
def test_remove_parallel_grad(remove_parallel_grad: Callable) -> None:
    ex = "remove_parallel_grad"
    names = ("W_dec", "grad")
    for seed, (d_sae, d_in, unit, dtype) in enumerate(
            [(6, 4, True, torch.float32), (5, 5, False, torch.float64),
             (3, 8, False, torch.float32)]):
        g = seeded_generator(seed)
        W_dec = torch.randn(d_sae, d_in, generator=g, dtype=dtype)
        if unit:
            W_dec = ref.normalize_rows(W_dec)
        else:
            W_dec = W_dec * torch.rand(d_sae, 1, generator=g, dtype=dtype).add(0.5) * 3
        grad = torch.randn(d_sae, d_in, generator=g, dtype=dtype)
        expected = ref.remove_parallel_component(W_dec, grad)
        got = _call_on_copies(ex, remove_parallel_grad, (W_dec, grad), names)
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
        _same_dtype(ex, got, dtype, "the projected gradient")
        dots = (got * W_dec).sum(-1).abs().max()
        require(float(dots) < 1e-4, ex, "the result still has a component along W_dec's rows.")
    passed(ex, "removes exactly the component along each decoder row (unit and non-unit rows, "
               "float32 and float64), returning a new tensor")


# --------------------------------------------------------------------------- geometric median


@_one_thread
def test_geometric_median(geometric_median: Callable) -> None:
    ex = "geometric_median"
    names = ("points", "n_iter")
    cases = []
    for seed, (n, d) in enumerate([(20, 3), (7, 2), (50, 5)]):
        g = seeded_generator(seed)
        pts = torch.randn(n, d, generator=g, dtype=torch.float64)
        pts[0] = pts[0] * 20  # an outlier
        cases.append(pts)
    # the mean coincides with one of the points (the 1/distance weight must be guarded)
    cases.append(torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]],
                              dtype=torch.float64))
    # the number of iterations and the starting point are part of the answer: few iterations
    for n_iter in (0, 1, 3):
        pts = cases[0]
        got = _call_on_copies(ex, geometric_median, (pts, n_iter), names)
        one_more = ref.geometric_median(pts, max_iter=n_iter + 1, tol=0.0)
        compare(got, ref.geometric_median(pts, max_iter=n_iter, tol=0.0), exercise=ex,
                what=f"the estimate after n_iter={n_iter} iterations from the mean",
                atol=1e-8, rtol=1e-7, mistakes={
                    "you ran one iteration more than n_iter": one_more,
                    "you started from zero instead of the mean": _weiszfeld(
                        pts, torch.zeros(pts.shape[1], dtype=pts.dtype), n_iter),
                    "you started from the first point instead of the mean": _weiszfeld(
                        pts, pts[0].clone(), n_iter),
                    "you ignore n_iter (ran to convergence)": ref.geometric_median(
                        pts, max_iter=500, tol=0.0),
                })
        _same_dtype(ex, got, pts.dtype, "the median")
    n_iter = 200
    for pts in cases:
        expected = ref.geometric_median(pts, max_iter=n_iter, tol=0.0)
        got = _call_on_copies(ex, geometric_median, (pts, n_iter), names)
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
    # float32 in, float32 out
    pts = cases[0].float()
    got = _call_on_copies(ex, geometric_median, (pts, 5), names)
    compare(got, ref.geometric_median(pts, max_iter=5, tol=0.0), exercise=ex,
            what="the estimate after 5 iterations on float32 points", atol=1e-4, rtol=1e-4)
    _same_dtype(ex, got, torch.float32, "the median")
    passed(ex, "starts at the mean, runs exactly n_iter iterations (0, 1, 3, 5 checked) and "
               "converges to the reference on 4 cases (outliers, a point at the mean)")


def _weiszfeld(pts: Tensor, start: Tensor, n_iter: int) -> Tensor:
    m = start
    for _ in range(n_iter):
        w = 1 / (pts - m).norm(dim=-1).clamp_min(1e-8)
        m = (w[:, None] * pts).sum(0) / w.sum()
    return m


# --------------------------------------------------------------------------- topk_activation


def _check_tied_topk(ex: str, got: Tensor, pre: Tensor, n_keep: int, what: str) -> None:
    """With tied values any choice among the ties is right, but exactly n_keep values stay
    (of those that are positive), each equal to ReLU(pre) where it was kept."""
    require(isinstance(got, Tensor) and got.shape == pre.shape, ex,
            f"{what}: the result should have shape {tuple(pre.shape)}.")
    kept = got != 0
    n_pos = min(n_keep, int((pre.reshape(-1) > 0).sum())) if got.dim() == 1 else None
    count = int(kept.sum()) if n_pos is not None else None
    if got.dim() == 1:
        require(count == n_pos, ex, f"{what}: {count} values survive but exactly {n_keep} "
                "should be kept (tied values must not all pass): use topk, not a threshold "
                "such as pre >= kth_value.")
    require(torch.equal(got[kept], torch.relu(pre)[kept]), ex,
            f"{what}: the kept values should be ReLU(pre) at the kept positions.")


@_one_thread
def test_topk_activation(topk_activation: Callable) -> None:
    ex = "topk_activation"
    names = ("pre", "k")
    for seed, (n, d_sae, k, dtype) in enumerate(
            [(5, 10, 3, torch.float32), (1, 6, 1, torch.float64), (7, 8, 8, torch.float32),
             (4, 9, 5, torch.float64)]):
        pre = torch.randn(n, d_sae, generator=seeded_generator(seed), dtype=dtype) * 2
        expected = ref.topk_activation(pre, k)
        got = _call_on_copies(ex, topk_activation, (pre, k), names)
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
        _same_dtype(ex, got, dtype, "the latents")
        _grad_check(ex, topk_activation, ref.topk_activation, (pre, k), names, wrt=(0,),
                    what=f"the latents (k={k})", seed=seed)
    # ties: exactly k per token survive, whichever of the tied ones
    pre = torch.tensor([[1.0, 1.0, 1.0, 0.5, -1.0], [2.0, 0.0, 2.0, 2.0, 2.0],
                        [0.3, 0.3, 0.3, 0.3, 0.3]])
    for k in (1, 2, 3):
        got = _call_on_copies(ex, topk_activation, (pre, k), names)
        for row in range(pre.shape[0]):
            _check_tied_topk(ex, got[row], pre[row], k, f"token {row} with tied values, k={k}")
    # all negative: every latent is 0
    pre = -torch.rand(3, 5, generator=seeded_generator(5)) - 0.1
    compare(call(ex, topk_activation, pre.clone(), 2), torch.zeros(3, 5), exercise=ex,
            what="the latents of all-negative pre-activations (should all be 0)",
            mistakes={"the ReLU is missing": torch.zeros_like(pre).scatter(
                -1, pre.topk(2, -1).indices, pre.topk(2, -1).values)})
    passed(ex, "keeps the k largest per token (ReLU'd): values, dtype and gradients on 4 random "
               "cases, exactly k under ties (k = 1, 2, 3), all-negative inputs")


def _topk_dim0(pre: Tensor, k: int) -> Tensor:
    kk = min(k, pre.shape[0])
    v, i = pre.topk(kk, dim=0)
    return torch.zeros_like(pre).scatter(0, i, torch.relu(v))


# --------------------------------------------------------------------------- auxk_loss


def _normalised(residual: Tensor, e_hat: Tensor) -> Tensor:
    return ref.normalized_aux_error(residual, e_hat)


@_one_thread
def test_auxk_loss(auxk_loss: Callable) -> None:
    ex = "auxk_loss"
    names = ("residual", "pre", "W_dec", "dead_mask", "k_aux")
    for seed, (n, d_sae, d_in, n_dead, k_aux, dtype) in enumerate(
        [(6, 12, 4, 5, 3, torch.float32), (4, 10, 3, 2, 256, torch.float64),
         (1, 8, 5, 8, 4, torch.float32), (9, 16, 6, 7, 1, torch.float64)]
    ):
        g = seeded_generator(seed)
        pre = torch.randn(n, d_sae, generator=g, dtype=dtype)
        W_dec = torch.randn(d_sae, d_in, generator=g, dtype=dtype)
        residual = torch.randn(n, d_in, generator=g, dtype=dtype)
        dead = torch.zeros(d_sae, dtype=torch.bool)
        dead[torch.randperm(d_sae, generator=g)[:n_dead]] = True
        args = (residual, pre, W_dec, dead, k_aux)
        expected = ref.auxk_loss(*args)
        try:
            got = _call_on_copies(ex, auxk_loss, args, names)
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
        aux = _aux_lat(pre, dead, k_eff)
        compare(got, expected, exercise=ex,
                what=f"the AuxK loss ({n} tokens, {n_dead} dead of {d_sae}, k_aux={k_aux})",
                mistakes={
                    "you did not normalise by the residual's variance (Gao et al. divide the "
                    "squared error by E||r - E[r]||^2)":
                        (residual - aux @ W_dec).pow(2).sum(-1).mean(),
                    "you normalised by E||r||^2 instead of the variance E||r - E[r]||^2":
                        (residual - aux @ W_dec).pow(2).sum(-1).mean()
                        / residual.pow(2).sum(-1).mean(),
                    "you take the top k_aux over all latents, not just the dead ones":
                        _normalised(residual, all_lat @ W_dec),
                    "the ReLU on the aux latents is missing":
                        _normalised(residual, no_relu @ W_dec),
                    "you reconstruct x - residual instead of the residual":
                        _normalised(residual, -(aux @ W_dec)),
                })
        require(got.dim() == 0, ex, "the loss should be a scalar.")
        _same_dtype(ex, got, dtype, "the loss")
        _grad_check(ex, auxk_loss, ref.auxk_loss, args, names, wrt=(1, 2),
                    what=f"the AuxK loss ({n_dead} dead, k_aux={k_aux})", seed=seed)
    # ties among the dead latents whose decoder rows are equal: any choice gives the same loss,
    # but keeping both tied latents (more than k_aux) does not
    pre = torch.tensor([[2.0, 1.0, 1.0, 3.0], [0.5, 1.5, 1.5, 4.0], [1.0, 0.2, 0.2, 0.0]])
    row = torch.tensor([1.0, -0.5, 0.25])
    W_dec = torch.stack([torch.tensor([0.3, 0.3, 0.3]), row, row, torch.tensor([0.0, 1.0, 0.0])])
    dead = torch.tensor([False, True, True, False])
    residual = torch.randn(3, 3, generator=seeded_generator(13))
    got = _call_on_copies(ex, auxk_loss, (residual, pre, W_dec, dead, 1), names)
    compare(got, ref.auxk_loss(residual, pre, W_dec, dead, 1), exercise=ex,
            what="the loss with k_aux=1 when two dead latents tie", mistakes={
                "you keep every tied latent (more than k_aux): use topk, not a threshold":
                    _normalised(residual, torch.relu(pre * dead) @ W_dec)})
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
    passed(ex, "the normalised AuxK loss, its dtype and its gradients (to pre and W_dec) match "
               "the reference on 4 cases; k_aux capped and obeyed under ties; residual "
               "detached; inputs left unchanged")


def _aux_lat(pre: Tensor, dead: Tensor, k: int) -> Tensor:
    return torch.nan_to_num(ref.topk_activation(pre.masked_fill(~dead, float("-inf")), k),
                            neginf=0.0)


# --------------------------------------------------------------------------- batchtopk


@_one_thread
def test_batchtopk_activation(batchtopk_activation: Callable) -> None:
    ex = "batchtopk_activation"
    names = ("pre", "k")
    for seed, (n, d_sae, k, dtype) in enumerate(
            [(6, 10, 2, torch.float32), (1, 7, 3, torch.float64), (5, 4, 4, torch.float32)]):
        pre = torch.randn(n, d_sae, generator=seeded_generator(seed), dtype=dtype) * 2
        expected = ref.batchtopk_activation(pre, k)
        got = _call_on_copies(ex, batchtopk_activation, (pre, k), names)
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
        _same_dtype(ex, got, dtype, "the latents")
        _grad_check(ex, batchtopk_activation, ref.batchtopk_activation, (pre, k), names,
                    wrt=(0,), what=f"the latents ({n} tokens, k={k})", seed=seed)
    # uneven batch: one token gets many latents, another none
    pre = torch.tensor([[5.0, 4.0, 3.0, 2.0], [-1.0, -2.0, 0.5, -3.0]])
    compare(_call_on_copies(ex, batchtopk_activation, (pre, 2), names),
            ref.batchtopk_activation(pre, 2),
            exercise=ex, what="the latents when one token holds all the large values",
            mistakes={"you keep k per token (TopK)": ref.topk_activation(pre, 2)})
    # ties across the batch: exactly n * k survive
    pre = torch.tensor([[1.0, 1.0, 0.2], [1.0, 0.0, 1.0], [0.5, 1.0, -1.0]])
    for k in (1, 2):
        got = _call_on_copies(ex, batchtopk_activation, (pre, k), names)
        _check_tied_topk(ex, got.reshape(-1) if isinstance(got, Tensor) else got,
                         pre.reshape(-1), 3 * k, f"a batch of 3 with tied values, k={k}")
    passed(ex, "keeps the batch_size * k largest over the batch: values, dtype and gradients "
               "on random and uneven cases, exactly batch_size * k under ties")


# --------------------------------------------------------------------------- JumpReLU


@_one_thread
def test_jumprelu_function(JumpReLUFunction) -> None:
    ex = "JumpReLUFunction"
    require(hasattr(JumpReLUFunction, "apply"), ex,
            "JumpReLUFunction should subclass torch.autograd.Function.")
    for seed, (n, d_sae, bw, dtype) in enumerate(
            [(64, 6, 0.5, torch.float64), (32, 4, 0.2, torch.float64), (1, 5, 1.0, torch.float64),
             (16, 3, 0.3, torch.float32)]):
        g = seeded_generator(seed)
        z = torch.randn(n, d_sae, generator=g, dtype=dtype)
        theta = (torch.rand(d_sae, generator=g, dtype=dtype) * 0.8 + 0.1)
        upstream = torch.randn(n, d_sae, generator=g, dtype=dtype)
        z1, t1 = z.clone().requires_grad_(True), theta.clone().requires_grad_(True)
        z2, t2 = z.clone().requires_grad_(True), theta.clone().requires_grad_(True)
        out = call(ex, JumpReLUFunction.apply, z1, t1, bw)
        expected = ref.JumpReLUFunction.apply(z2, t2, bw)
        compare(out, expected, exercise=ex, what="the forward output", mistakes={
            "you return H(z - theta) (the step) instead of z * H(z - theta)":
                (z > theta).to(dtype),
            "you return ReLU(z - theta) (shifted) instead of z * H(z - theta)":
                torch.relu(z - theta),
        })
        _same_dtype(ex, out, dtype, "the forward output")
        call(ex, lambda o, u=upstream: (o * u).sum().backward(), out)
        (expected * upstream).sum().backward()
        require(z1.grad is not None and t1.grad is not None, ex,
                "backward must return gradients for z and threshold (and None for bandwidth).")
        require(torch.equal(z1.detach(), z) and torch.equal(t1.detach(), theta), ex,
                "your code changed z or threshold in place; leave the inputs as they were.")
        inside = ((z - theta).abs() < bw / 2).to(dtype)
        compare(z1.grad, z2.grad, exercise=ex, what="the gradient with respect to z", mistakes={
            "you pass the gradient to z everywhere (it should be masked by H(z - theta))":
                upstream,
        })
        wide = ((z - theta).abs() < bw).to(dtype)
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
    passed(ex, "forward, dtype and both straight-through gradients match the reference for 4 "
               "bandwidths (float32 and float64)")


# --------------------------------------------------------------------------- reconstruction_stats

_STATS = ("explained_variance", "shrinkage")


def _stats_mistakes(x: Tensor, x_hat: Tensor) -> dict[str, dict[str, Tensor]]:
    flat_x = x.reshape(-1, x.shape[-1]).double()
    flat_h = x_hat.reshape(-1, x.shape[-1]).double()
    error = (flat_x - flat_h).pow(2).sum(-1)
    centred = (flat_x - flat_x.mean(0)).pow(2).sum(-1)
    dot = (flat_x * flat_h).sum(-1)
    per_dim = 1 - (flat_x - flat_h).pow(2).mean(0) / flat_x.var(0, unbiased=False)
    gamma = ev.shrinkage(x, x_hat).double()
    return {
        "explained_variance": {
            "the variance is not centred: E||x||^2 instead of E||x - E[x]||^2":
                1 - error.mean() / flat_x.pow(2).sum(-1).mean(),
            "you return the unexplained fraction E||x - x_hat||^2 / E||x - E[x]||^2":
                error.mean() / centred.mean(),
            "you average one explained variance per dimension instead of pooling them":
                per_dim.mean(),
            "you averaged per-token ratios instead of dividing the two means":
                1 - (error / centred).mean(),
            "the variance is taken around the mean of x_hat, not of x":
                1 - error.mean() / (flat_x - flat_h.mean(0)).pow(2).sum(-1).mean(),
        },
        "shrinkage": {
            "the ratio is inverted (E<x, x_hat> / E||x_hat||^2)": 1 / gamma,
            "you averaged per-token ratios instead of dividing the two means":
                (flat_h.pow(2).sum(-1) / dot).mean(),
            "you compared norms, E||x_hat|| / E||x||":
                flat_h.norm(dim=-1).mean() / flat_x.norm(dim=-1).mean(),
            "the numerator is E||x||^2 instead of E||x_hat||^2":
                flat_x.pow(2).sum() / dot.sum(),
        },
    }


@_one_thread
def test_reconstruction_stats(reconstruction_stats: Callable) -> None:
    ex = "reconstruction_stats"
    names = ("x", "x_hat")
    g = seeded_generator(0)
    scales = torch.rand(16, generator=g) * 3 + 0.2  # dimensions of different spread
    x = (torch.randn(100, 16, generator=g) + torch.randn(16, generator=g) * 2) * scales
    per_token = torch.rand(100, 1, generator=g) * 0.6 + 0.5
    noisy = x + 0.5 * torch.randn(100, 16, generator=g) * scales.flip(0)
    cases = [
        (x, 0.8 * x, "x_hat = 0.8 x"),
        (x, noisy, "x plus noise"),
        (x, per_token * x, "x_hat shrunk by a different factor per token"),
        (x.reshape(4, 25, 16), noisy.reshape(4, 25, 16), "[batch, pos, d] inputs"),
        (x.double(), (per_token * x).double(), "float64, a factor per token"),
        (x[:1].double(), 1.3 * x[:1].double(), "one token, float64, x_hat = 1.3 x"),
    ]
    for x_in, x_hat, label in cases:
        got = _call_on_copies(ex, reconstruction_stats, (x_in, x_hat), names)
        require(isinstance(got, dict) and set(got) == set(_STATS), ex,
                f"return a dict with exactly the keys {list(_STATS)}"
                + (f", got {sorted(got)}." if isinstance(got, dict) else
                   f", got {type(got).__name__}."))
        wrong = _stats_mistakes(x_in, x_hat)
        expected = {"explained_variance": ev.explained_variance(x_in.double(), x_hat.double()),
                    "shrinkage": ev.shrinkage(x_in, x_hat)}
        # one token has no variance to explain: only gamma is defined there
        for stat in _STATS if x_in.reshape(-1, 16).shape[0] > 1 else ("shrinkage",):
            compare(got[stat], expected[stat].double(), exercise=ex,
                    what=f"the {stat} for {label}", rtol=1e-4, atol=1e-6, mistakes=wrong[stat])
            require(isinstance(got[stat], Tensor) and got[stat].dim() == 0, ex,
                    f"the {stat} should be a 0-dimensional tensor.")
            _same_dtype(ex, got[stat], x_in.dtype, f"the {stat}")
    passed(ex, "explained variance and gamma match on 6 cases (0.8 x gives gamma 0.8, noise, "
               "per-token factors, [batch, pos, d], float64 kept, one token), inputs left "
               "unchanged")


# --------------------------------------------------------------------------- Gated SAE

_GATED = ("x", "W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec", "sparsity_coefficient")
_TERMS = ("mse", "l1", "aux")


def _gated_ref(x, W_enc, b_gate, r_mag, b_mag, W_dec, b_dec, coef, mistake: str = ""):
    """The library's Gated SAE, or one of the known mistakes; returns (x_hat, losses)."""
    if not mistake:
        x_hat, _, losses = ref.gated_forward(x, W_enc, b_gate, r_mag, b_mag, W_dec, b_dec, coef)
        return x_hat, losses
    x_c = x - b_dec
    pi_gate = x_c @ W_enc + b_gate
    scale = {"no_exp": r_mag, "no_r_mag": torch.ones_like(r_mag)}.get(mistake, r_mag.exp())
    pi_mag = x_c @ (W_enc * scale) + b_mag
    gate_on = torch.relu(pi_gate) if mistake == "relu_gate" else (pi_gate > 0).to(x.dtype)
    latents = gate_on * torch.relu(pi_mag)
    x_hat = latents @ W_dec + b_dec
    penalised = torch.relu(pi_mag) if mistake == "l1_on_magnitudes" else torch.relu(pi_gate)
    norms = torch.ones_like(r_mag) if mistake == "unweighted" else W_dec.norm(dim=-1)
    frozen_W = W_dec if mistake == "aux_moves_decoder" else W_dec.detach()
    via_gate = torch.relu(pi_gate) @ frozen_W + (0 if mistake == "aux_no_b_dec" else b_dec.detach())
    return x_hat, {"mse": (x_hat - x).pow(2).sum(-1).mean(),
                   "l1": coef * (penalised * norms).sum(-1).mean(),
                   "aux": (via_gate - x).pow(2).sum(-1).mean()}


_GATED_MISTAKES = {
    "no_exp": "you multiply W_enc by r_mag instead of exp(r_mag)",
    "no_r_mag": "the magnitude path ignores r_mag",
    "relu_gate": "the gate is ReLU(pi_gate) instead of the step H(pi_gate)",
    "l1_on_magnitudes": "the L1 penalises the magnitudes ReLU(pi_mag) instead of the gate's "
                        "ReLU(pi_gate): that brings the shrinkage back",
    "unweighted": "the L1 is not weighted by the decoder row norms",
    "aux_no_b_dec": "the auxiliary reconstruction leaves out b_dec",
}


def _gated_params(seed: int, n: int, d_in: int, d_sae: int, dtype: torch.dtype) -> list[Tensor]:
    g = seeded_generator(seed)
    W_dec = ref.normalize_rows(torch.randn(d_sae, d_in, generator=g, dtype=dtype))
    W_dec = W_dec * (torch.rand(d_sae, 1, generator=g, dtype=dtype) + 0.5)
    return [torch.randn(n, d_in, generator=g, dtype=dtype),
            W_dec.t() * (torch.rand(d_sae, generator=g, dtype=dtype) + 0.5),  # W_enc
            torch.randn(d_sae, generator=g, dtype=dtype) * 0.3,  # b_gate
            torch.randn(d_sae, generator=g, dtype=dtype) * 0.3,  # r_mag
            torch.randn(d_sae, generator=g, dtype=dtype) * 0.3,  # b_mag
            W_dec, torch.randn(d_in, generator=g, dtype=dtype) * 0.2]  # b_dec


def _gated_output(ex: str, got: Any) -> tuple[Tensor, dict[str, Tensor]]:
    require(isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], dict), ex,
            "return a pair (x_hat, losses) with losses a dict {'mse': ..., 'l1': ..., 'aux': ...}.")
    x_hat, losses = got
    missing = [t for t in _TERMS if t not in losses]
    require(not missing and set(losses) == set(_TERMS), ex,
            f"the losses dict should have exactly the keys {list(_TERMS)}, got {sorted(losses)}.")
    return x_hat, losses


@_one_thread
def test_gated_sae_forward(gated_sae_forward: Callable) -> None:
    ex = "gated_sae_forward"
    cases = [(16, 5, 12, 0.3, torch.float64), (1, 3, 7, 1.5, torch.float64),
             (24, 6, 10, 0.8, torch.float32)]
    for seed, (n, d_in, d_sae, coef, dtype) in enumerate(cases):
        params = _gated_params(seed, n, d_in, d_sae, dtype)
        args = (*params, coef)
        x_hat_ref, losses_ref = _gated_ref(*args)
        x_hat, losses = _gated_output(
            ex, _call_on_copies(ex, gated_sae_forward, args, _GATED))
        wrong = {m: _gated_ref(*args, mistake=m) for m in _GATED_MISTAKES}
        what = f"({n} tokens, d_sae={d_sae}, coefficient {coef})"
        compare(x_hat, x_hat_ref, exercise=ex, what=f"x_hat {what}",
                mistakes={_GATED_MISTAKES[m]: w[0] for m, w in wrong.items()})
        _same_dtype(ex, x_hat, dtype, "x_hat")
        for term in _TERMS:
            compare(losses[term], losses_ref[term], exercise=ex,
                    what=f"the {term!r} term {what}",
                    mistakes={_GATED_MISTAKES[m]: w[1][term] for m, w in wrong.items()})
            _same_dtype(ex, losses[term], dtype, f"the {term!r} term")
        # gradients of a random mix of the three terms, to every tensor
        mix = torch.rand(3, generator=seeded_generator(100 + seed), dtype=dtype) + 0.5

        def total(*a, fn=None, mix=mix):
            _, terms = _gated_output(ex, fn(*a))
            return sum(w * terms[t] for w, t in zip(mix, _TERMS, strict=True))

        def aux_moves(*a, mix=mix):
            return sum(w * t for w, t in zip(
                mix, _gated_ref(*a, mistake="aux_moves_decoder")[1].values(), strict=True))

        wrong_grads = _leaf_grads(aux_moves, args)
        _grad_check(ex, lambda *a: total(*a, fn=gated_sae_forward),
                    lambda *a: total(*a, fn=_gated_ref), args, _GATED,
                    wrt=range(7), what=f"a mix of the three terms {what}", seed=seed,
                    grad_mistakes={
                        name: {"the auxiliary term trains the decoder: detach W_dec (and "
                               "b_dec) in it": wrong_grads[i]}
                        for i, name in enumerate(_GATED[:7])})
    _train_gated(ex, gated_sae_forward)
    passed(ex, "x_hat, the three loss terms, dtypes and the gradients to all 7 tensors match on "
               "3 cases (3 coefficients); 30 Adam steps through your function end at the "
               "library's weights; inputs left unchanged")


def _leaf_grads(fn: Callable, args: Sequence[Any]) -> list[Tensor]:
    leaves = [a.detach().clone().requires_grad_(True) if isinstance(a, Tensor) else a
              for a in args]
    fn(*leaves).backward()
    return [leaf.grad if isinstance(leaf, Tensor) else None for leaf in leaves[:7]]


def _train_gated(ex: str, gated_sae_forward: Callable, n_steps: int = 30) -> None:
    """Train a small Gated SAE with Adam through the learner's function and the library's
    SAE from the same start; the weights must agree at the end."""
    data = SyntheticFeatures(24, 8, 0.1, seed=5, dtype=torch.float64)
    sae = ref.SAE(ref.SAEConfig(d_in=8, d_sae=32, architecture="gated",
                                sparsity_coefficient=0.5), dtype=torch.float64, seed=5)
    names = ("W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec")
    mine = [getattr(sae, n).detach().clone().requires_grad_(True) for n in names]
    opt_ref = torch.optim.Adam(sae.parameters(), lr=1e-2)
    opt_mine = torch.optim.Adam(mine, lr=1e-2)
    for step in range(n_steps):
        x = data.sample(64, seeded_generator(1000 + step))[0]
        opt_ref.zero_grad()
        sae(x).loss.backward()
        opt_ref.step()
        opt_mine.zero_grad()
        _, losses = _gated_output(ex, call(ex, gated_sae_forward, x, *mine, 0.5))
        call(ex, lambda terms=losses: sum(terms.values()).backward())
        opt_mine.step()
    for name, p in zip(names, mine, strict=True):
        compare(p, getattr(sae, name), exercise=ex, atol=1e-6, rtol=1e-5,
                what=f"`{name}` after {n_steps} Adam steps of training through your function")


# --------------------------------------------------------------------------- train_sae_loop


def _reference_loop(params: list[Tensor], batch: Callable[[int], Tensor], n_steps: int,
                    lr: float, coef: float, mistake: str = "") -> list[float]:
    """The loop the exercise asks for, or one of the known mistakes."""
    make = torch.optim.SGD if mistake == "sgd" else torch.optim.Adam
    optimizer = make(params, lr=lr)
    history = []
    for step in range(n_steps):
        if mistake == "new_optimizer":
            optimizer = make(params, lr=lr)
        _, losses = _gated_ref(batch(step), *params, coef)
        loss = losses["mse"] if mistake == "mse_only" else sum(losses.values())
        if mistake != "no_zero_grad":
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history


_LOOP_MISTAKES = {
    "sgd": "you used SGD instead of Adam",
    "no_zero_grad": "the gradients are never zeroed, so every step adds to the last one's "
                    "(call optimizer.zero_grad() each step)",
    "new_optimizer": "you create a new Adam optimiser every step, which throws away its "
                     "running averages: create it once, before the loop",
    "mse_only": "you train on the 'mse' term alone: the loss is the sum of all the terms",
}
_GATED_PARAMS = ("W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec")


def _gated_start(seed: int) -> list[Tensor]:
    sae = ref.SAE(ref.SAEConfig(d_in=8, d_sae=32, architecture="gated"),
                  dtype=torch.float64, seed=seed)
    return [getattr(sae, n).detach().clone().requires_grad_(True) for n in _GATED_PARAMS]


@_one_thread
def test_train_sae_loop(train_sae_loop: Callable) -> None:
    ex = "train_sae_loop"
    data = SyntheticFeatures(24, 8, 0.1, seed=5, dtype=torch.float64)

    def batch_of(seed: int) -> Callable[[int], Tensor]:
        return lambda step: data.sample(64, seeded_generator(seed * 1000 + step))[0]

    for seed, (n_steps, lr, coef) in enumerate([(12, 1e-2, 0.5), (7, 3e-3, 1.5), (0, 1e-2, 1.0)]):
        params = _gated_start(seed)
        start = [p.detach().clone() for p in params]
        batch_calls: list[int] = []
        forward_calls: list[bool] = []

        def batch(step: int, seed: int = seed, calls: list[int] = batch_calls) -> Tensor:
            calls.append(step)
            return batch_of(seed)(step)

        def forward(x: Tensor, *rest: Any, params: list[Tensor] = params,
                    calls: list[bool] = forward_calls) -> tuple[Tensor, dict[str, Tensor]]:
            calls.append(len(rest) == len(params) + 1
                         and all(a is p for a, p in zip(rest, params, strict=False)))
            return _gated_ref(x, *rest)

        history = call(ex, train_sae_loop, forward, params, batch, n_steps, lr, coef)
        what = f"({n_steps} steps, lr {lr}, coefficient {coef})"
        require(batch_calls == list(range(n_steps)), ex,
                f"batch was called with steps {batch_calls[:12]}"
                f"{' ...' if len(batch_calls) > 12 else ''} {what}; train on batch(t) for "
                f"t = 0, 1, ..., {n_steps - 1}, once each.")
        require(len(forward_calls) == n_steps, ex,
                f"your loop ran the forward pass {len(forward_calls)} times in {n_steps} steps "
                f"{what}: one forward pass per step is enough (reuse its loss for the history).")
        require(all(forward_calls), ex,
                "pass the parameters themselves to forward, in order: "
                "forward(x, *params, sparsity_coefficient) (not copies, which would not train).")
        require(isinstance(history, (list, tuple)) and len(history) == n_steps, ex,
                f"return a list of {n_steps} losses, one per step {what}, got "
                f"{type(history).__name__}"
                + (f" of length {len(history)}." if hasattr(history, "__len__") else "."))
        require(all(isinstance(h, float) for h in history), ex,
                "the history should hold Python floats (loss.item()): a loss tensor keeps its "
                "whole computation graph alive, so a list of them grows with every step.")
        expected_params = [s.clone().requires_grad_(True) for s in start]
        expected_history = _reference_loop(expected_params, batch_of(seed), n_steps, lr, coef)
        wrong = {}
        for mistake, description in _LOOP_MISTAKES.items():
            wrong_params = [s.clone().requires_grad_(True) for s in start]
            _reference_loop(wrong_params, batch_of(seed), n_steps, lr, coef, mistake)
            wrong[description] = wrong_params
        for i, name in enumerate(_GATED_PARAMS):
            compare(params[i], expected_params[i], exercise=ex, atol=1e-7, rtol=1e-6,
                    what=f"`{name}` after your loop {what}",
                    mistakes={d: w[i] for d, w in wrong.items()})
        if n_steps:
            compare(torch.tensor(history, dtype=torch.float64),
                    torch.tensor(expected_history, dtype=torch.float64), exercise=ex,
                    atol=1e-7, rtol=1e-6, what=f"the losses your loop returned {what}")
    passed(ex, "the weights after 12 and 7 steps and every step's loss match the reference "
               "loop (Adam once, gradients zeroed, the sum of the terms) for 2 learning rates "
               "and coefficients; batch(t) for t = 0.. once each, one forward pass per step; "
               "0 steps leave the weights alone")


__all__ = [
    "CheckFailed",
    "test_auxk_loss",
    "test_batchtopk_activation",
    "test_gated_sae_forward",
    "test_geometric_median",
    "test_jumprelu_function",
    "test_mean_max_cosine_similarity",
    "test_reconstruction_stats",
    "test_relu_sae_forward",
    "test_remove_parallel_grad",
    "test_topk_activation",
    "test_train_sae_loop",
]
