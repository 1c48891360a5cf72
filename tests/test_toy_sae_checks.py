"""Notebook 02's checks accept correct answers written differently from the reference
(torch.where for a mask multiply, einsum for @, F.normalize, index assignment for scatter...)."""

from __future__ import annotations

import pytest

from sae_course.notebook_build import SOLUTIONS_DIR, exercises, setup_cells
from tests.test_exercises import run_cells

SOURCE = SOLUTIONS_DIR / "02_toy_saes.py"
SETUP = setup_cells(SOURCE)
EXERCISES = {ex.name: ex for ex in exercises(SOURCE)}

REWRITES = {
    "mean_max_cosine_similarity": [
        ("    t = true_features / true_features.norm(dim=-1, keepdim=True)\n"
         "    w = W_dec / W_dec.norm(dim=-1, keepdim=True)\n"
         "    return (t @ w.t()).max(dim=-1).values.mean()\n",
         "    t = torch.nn.functional.normalize(true_features, dim=1)\n"
         "    w = torch.nn.functional.normalize(W_dec, dim=1)\n"
         "    return torch.einsum(\"fd,sd->fs\", t, w).amax(dim=1).mean()\n"),
    ],
    "relu_sae_forward": [
        ("    latents = torch.relu((x - b_dec) @ W_enc + b_enc)\n"
         "    x_hat = latents @ W_dec + b_dec\n",
         "    pre = torch.einsum(\"ni,is->ns\", x - b_dec, W_enc) + b_enc\n"
         "    latents = torch.where(pre > 0, pre, torch.zeros_like(pre))\n"
         "    x_hat = torch.addmm(b_dec, latents, W_dec)\n"),
        ("    per_latent = latents * W_dec.norm(dim=-1) if weighted else latents\n"
         "    losses = {\"mse\": (x_hat - x).pow(2).sum(-1).mean(),\n"
         "              \"l1\": sparsity_coefficient * per_latent.sum(-1).mean()}\n",
         "    scale = torch.linalg.vector_norm(W_dec, dim=1) if weighted else 1.0\n"
         "    n = x.shape[0]\n"
         "    losses = {\"mse\": torch.sum((x - x_hat) ** 2) / n,\n"
         "              \"l1\": sparsity_coefficient * (latents.abs() * scale).sum() / n}\n"),
    ],
    "remove_parallel_grad": [
        ("    unit = W_dec / W_dec.norm(dim=-1, keepdim=True)\n"
         "    return grad - (grad * unit).sum(-1, keepdim=True) * unit\n",
         "    unit = torch.nn.functional.normalize(W_dec, dim=1)\n"
         "    along = torch.einsum(\"sd,sd->s\", grad, unit)\n"
         "    return grad - along[:, None] * unit\n"),
    ],
    "geometric_median": [
        ("        w = 1.0 / (points - m).norm(dim=-1).clamp_min(1e-8)\n"
         "        m = (w[:, None] * points).sum(0) / w.sum()\n",
         "        dist = torch.linalg.vector_norm(points - m, dim=1)\n"
         "        w = 1.0 / torch.clamp(dist, min=1e-8)\n"
         "        m = (w / w.sum()) @ points\n"),
    ],
    "topk_activation": [
        ("    values, indices = pre.topk(k, dim=-1)\n"
         "    return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))\n",
         "    keep = torch.zeros_like(pre, dtype=torch.bool)\n"
         "    keep.scatter_(-1, pre.topk(k, dim=-1).indices, True)\n"
         "    return torch.where(keep & (pre > 0), pre, torch.zeros_like(pre))\n"),
    ],
    "batchtopk_activation": [
        ("    flat = pre.reshape(-1)\n"
         "    values, indices = flat.topk(k * pre.shape[0])\n"
         "    return torch.zeros_like(flat).scatter(0, indices, torch.relu(values))"
         ".reshape(pre.shape)\n",
         "    flat = pre.flatten()\n"
         "    indices = flat.topk(k * len(pre)).indices\n"
         "    out = torch.zeros_like(flat)\n"
         "    out[indices] = flat[indices].clamp(min=0)\n"
         "    return out.view(pre.shape)\n"),
    ],
    "JumpReLUFunction": [
        ("        return z * (z > threshold).to(z.dtype)\n",
         "        return torch.where(z > threshold, z, torch.zeros_like(z))\n"),
        ("        in_window = ((z - threshold).abs() < bw / 2).to(z.dtype)\n"
         "        grad_z = grad_out * (z > threshold).to(z.dtype)\n"
         "        grad_threshold = (-(threshold / bw) * in_window * grad_out).sum(0)\n",
         "        zero = torch.zeros_like(grad_out)\n"
         "        grad_z = torch.where(z > threshold, grad_out, zero)\n"
         "        near = (z - threshold).abs() < bw / 2\n"
         "        grad_threshold = torch.where(near, -threshold / bw * grad_out, zero).sum(0)\n"),
    ],
    "reconstruction_stats": [
        ("    x, x_hat = x.reshape(-1, x.shape[-1]), x_hat.reshape(-1, x_hat.shape[-1])\n"
         "    error = (x - x_hat).pow(2).sum(-1).mean()\n"
         "    variance = (x - x.mean(0)).pow(2).sum(-1).mean()\n"
         "    return {\"explained_variance\": 1 - error / variance,\n"
         "            \"shrinkage\": x_hat.pow(2).sum() / (x * x_hat).sum()}\n",
         "    flat = x.flatten(0, -2)\n"
         "    centred = flat - flat.mean(dim=0, keepdim=True)\n"
         "    unexplained = torch.sum((x - x_hat) ** 2) / torch.sum(centred ** 2)\n"
         "    gamma = torch.einsum(\"...d,...d->\", x_hat, x_hat) / torch.einsum(\"...d,...d->\", "
         "x, x_hat)\n"
         "    return {\"shrinkage\": gamma, \"explained_variance\": 1.0 - unexplained}\n"),
    ],
    "gated_sae_forward": [
        ("    pi_mag = x_c @ (W_enc * r_mag.exp()) + b_mag\n",
         "    pi_mag = (x_c @ W_enc) * torch.exp(r_mag) + b_mag\n"),
    ],
    "train_sae_loop": [
        ("    optimizer = torch.optim.Adam(params, lr=lr)\n"
         "    history = []\n"
         "    for step in range(n_steps):\n"
         "        _, losses = forward(batch(step), *params, sparsity_coefficient)\n"
         "        loss = sum(losses.values())\n"
         "        optimizer.zero_grad()\n"
         "        loss.backward()\n"
         "        optimizer.step()\n"
         "        history.append(loss.item())\n"
         "    return history\n",
         "    optimizer = torch.optim.Adam(params, lr)\n"
         "    history = []\n"
         "    step = 0\n"
         "    while step < n_steps:\n"
         "        x = batch(step)\n"
         "        terms = forward(x, *params, sparsity_coefficient)[1]\n"
         "        loss = terms[\"mse\"] + terms[\"l1\"] + terms[\"aux\"]\n"
         "        optimizer.zero_grad(set_to_none=False)\n"
         "        loss.backward()\n"
         "        optimizer.step()\n"
         "        history.append(float(loss))\n"
         "        step += 1\n"
         "    return history\n"),
    ],
}


@pytest.mark.parametrize(("exercise", "old", "new"),
                         [(e, o, n) for e, rs in REWRITES.items() for o, n in rs],
                         ids=[f"{e}-{i}" for e, rs in REWRITES.items() for i in range(len(rs))])
def test_correct_rewrites_pass(exercise, old, new):
    ex = EXERCISES[exercise]
    assert ex.solution.count(old) == 1
    printed = run_cells(*SETUP, ex.solution.replace(old, new), ex.check)
    assert "\N{CHECK MARK}" in printed
