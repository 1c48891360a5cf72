"""The language-model metrics: hand computations on tiny tensors, the running sums, and
`evaluate_lm` on the offline model against the same numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from sae_course import evaluation as ev
from sae_course import text
from sae_course.activations import harvest
from sae_course.models import load_model
from sae_course.sae import SAE, SAEConfig
from sae_course.settings import cpu_threads


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


# ---------------------------------------------------------------- on tiny tensors


def test_kl_divergence():
    logits = torch.randn(3, 4, 7)
    assert ev.kl_divergence(logits, logits).abs().max() < 1e-6
    assert ev.kl_divergence(logits, logits + 5.0).abs().max() < 1e-5  # a shift is no change
    p, q = torch.tensor([0.0, 0.0]), torch.tensor([math.log(3.0), 0.0])  # (1/2, 1/2), (3/4, 1/4)
    assert float(ev.kl_divergence(p, q)) == pytest.approx(0.5 * math.log(4 / 3), rel=1e-5)
    assert float(ev.kl_divergence(q, p)) != pytest.approx(float(ev.kl_divergence(p, q)))


def test_next_token_loss():
    logits = torch.zeros(1, 3, 5)
    logits[0, 0, 2] = math.log(4.0)  # p(token 2) = 4 / 8 after position 0
    tokens = torch.tensor([[0, 2, 1]])
    loss = ev.next_token_loss(logits, tokens)
    assert loss.shape == (1, 2)
    assert loss[0, 0] == pytest.approx(math.log(2.0), rel=1e-5)
    assert loss[0, 1] == pytest.approx(math.log(5.0), rel=1e-5)  # uniform over 5


def test_shrinkage():
    x = torch.randn(50, 6)
    assert float(ev.shrinkage(x, 0.8 * x)) == pytest.approx(0.8, rel=1e-5)
    assert float(ev.shrinkage(x, x)) == pytest.approx(1.0, rel=1e-6)
    x_hat = x + 0.1 * torch.randn(50, 6)
    gamma = float(ev.shrinkage(x, x_hat))
    grid = torch.linspace(0.5, 1.5, 1001).tolist()
    errors = [float(((x_hat / g - x) ** 2).sum()) for g in grid]
    best = grid[errors.index(min(errors))]
    assert gamma == pytest.approx(best, abs=2e-3)  # the gamma with the smallest error


def test_explained_variance_formula():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    x_hat = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    # E||x - x_hat||^2 = 1/2; E[x] = (2, 0), E||x - E[x]||^2 = 1
    assert float(ev.explained_variance(x, x_hat)) == pytest.approx(0.5)


def test_ce_loss_recovered():
    assert ev.ce_loss_recovered(2.0, 2.5, 10.0) == pytest.approx(7.5 / 8)
    assert ev.ce_loss_recovered(2.0, 2.0, 10.0) == 1.0
    assert ev.ce_loss_recovered(2.0, 10.0, 10.0) == 0.0
    assert math.isnan(ev.ce_loss_recovered(2.0, 2.5, 2.0))


def test_log10_density():
    density = torch.tensor([0.0, 0.1, 1.0])
    torch.testing.assert_close(ev.log10_density(density), torch.tensor([-10.0, -1.0, 0.0]))


def test_running_sums_match_the_one_shot_metrics():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=gen) + 3.0
    x_hat = 0.7 * x + 0.2 * torch.randn(40, 5, generator=gen)
    latents = torch.relu(torch.randn(40, 9, generator=gen) - 0.8)
    latents[:, 0] = 0.0  # dead
    latents[:, 1] = 1.0  # dense
    stats = ev.ReconstructionStats(5, 9)
    for i in range(0, 40, 15):  # uneven batches
        stats.update(x[i : i + 15], x_hat[i : i + 15], latents[i : i + 15])
    m = stats.metrics()
    assert m["l0"] == pytest.approx(float(ev.l0(latents)))
    assert m["explained_variance"] == pytest.approx(float(ev.explained_variance(x, x_hat)),
                                                    abs=1e-6)
    assert m["shrinkage"] == pytest.approx(float(ev.shrinkage(x, x_hat)), rel=1e-6)
    assert m["mse"] == pytest.approx(float((x - x_hat).pow(2).sum(-1).mean()), rel=1e-6)
    torch.testing.assert_close(stats.density(), ev.firing_frequency(latents))
    assert m["dead_fraction"] == pytest.approx(float(ev.dead_fraction(latents)))
    assert m["dense_fraction"] == pytest.approx(float(ev.dense_fraction(latents)))
    assert m["dead_window_tokens"] == 40


def test_evaluate_sae_batches_and_tensor_agree():
    sae = SAE(SAEConfig(d_in=6, d_sae=12, architecture="topk", k=2), seed=0)
    x = torch.randn(30, 6, generator=torch.Generator().manual_seed(1))
    whole = ev.evaluate_sae(sae, x)
    batched = ev.evaluate_sae(sae, [x[:7], x[7:]])
    assert whole == pytest.approx(batched)
    assert whole["l0"] == pytest.approx(2.0, abs=0.2)


# ---------------------------------------------------------------- on the offline model


@pytest.fixture(scope="module")
def model():
    return load_model("offline", device="cpu")


@pytest.fixture(scope="module")
def hook(model):
    return f"blocks.{model.cfg.n_layers // 2}.hook_resid_pre"


@pytest.fixture(scope="module")
def tokens(model):
    """Five BOS-led contexts of 16 tokens of the model's own kind of text."""
    return text.contexts_for_model(model, 5, context_len=16, seed=0)[:5]


def identity_sae(d_in: int) -> SAE:
    sae = SAE(SAEConfig(d_in=d_in, d_sae=2 * d_in, architecture="relu"))
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    return sae


def test_a_perfect_sae_costs_nothing(model, hook, tokens):
    r = ev.evaluate_lm(identity_sae(model.cfg.d_model), model, tokens, hook, progress=False)
    assert abs(r.ce_gap) < 1e-4 and r.kl < 1e-5
    assert r.ce_recovered == pytest.approx(1.0, abs=1e-3)
    assert r.explained_variance == pytest.approx(1.0, abs=1e-5)
    assert r.shrinkage == pytest.approx(1.0, abs=1e-5)
    assert abs(r.ce_zero - r.ce_clean) > 1e-3  # the zero-ablation did run


def test_evaluate_lm_matches_a_hand_computation(model, hook, tokens):
    d = model.cfg.d_model
    sae = SAE(SAEConfig(d_in=d, d_sae=48, architecture="topk", k=6, extra={"hook_name": hook}),
              seed=0)
    sae.train()
    r = ev.evaluate_lm(sae, model, tokens, batch_size=2, progress=False)  # hook from the SAE
    assert sae.training  # evaluated in eval mode, then restored
    sae.eval()
    n, p = tokens.shape
    assert (r.hook_name, r.n_contexts) == (hook, n)
    assert r.n_predictions == n * (p - 2) and r.n_tokens == n * (p - 1)  # BOS left out

    with torch.no_grad():
        clean = model(tokens)
        x = harvest(model, tokens, hook)[:, 1:]
        out = sae(x.reshape(-1, d))

        def recon(acts, hook):
            return torch.cat([acts[:, :1], sae(acts[:, 1:]).x_hat], dim=1)

        def zero(acts, hook):
            return torch.cat([acts[:, :1], torch.zeros_like(acts[:, 1:])], dim=1)

        spliced = model.run_with_hooks(tokens, fwd_hooks=[(hook, recon)])
        zeroed = model.run_with_hooks(tokens, fwd_hooks=[(hook, zero)])
    # predictions made at positions 1 .. p - 2 (not at BOS; the last one has no target)
    ce = {k: float(ev.next_token_loss(v, tokens)[:, 1:].mean())
          for k, v in (("clean", clean), ("sae", spliced), ("zero", zeroed))}
    assert r.ce_clean == pytest.approx(ce["clean"], rel=1e-5)
    assert r.ce_sae == pytest.approx(ce["sae"], rel=1e-5)
    assert r.ce_zero == pytest.approx(ce["zero"], rel=1e-5)
    assert r.ce_gap == pytest.approx(ce["sae"] - ce["clean"], rel=1e-4)
    assert r.ce_recovered == pytest.approx(
        (ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"]), rel=1e-4)
    kl = ev.kl_divergence(clean[:, 1:-1], spliced[:, 1:-1]).mean()
    assert r.kl == pytest.approx(float(kl), rel=1e-4)
    flat = x.reshape(-1, d)
    assert r.explained_variance == pytest.approx(float(ev.explained_variance(flat, out.x_hat)),
                                                 abs=1e-5)
    assert r.shrinkage == pytest.approx(float(ev.shrinkage(flat, out.x_hat)), rel=1e-5)
    assert r.l0 == pytest.approx(float(ev.l0(out.latents)))
    density = ev.firing_frequency(out.latents)
    torch.testing.assert_close(r.density, density)
    assert r.dead == int((density == 0).sum()) and r.dense == int((density > 0.1).sum())
    assert r.log10_density.min() >= -10.0 and r.d_sae == 48

    text = str(r)
    assert text.index("CE gap") < text.index("CE recovered")  # the gap leads
    assert f"last {r.n_tokens:,} tokens" in text
    assert "density" not in r.as_dict() and r.as_dict()["ce_gap"] == r.ce_gap


def test_evaluate_lm_needs_a_hook_name(model, tokens):
    sae = SAE(SAEConfig(d_in=model.cfg.d_model, d_sae=8, architecture="relu"))
    with pytest.raises(ValueError, match="hook_name"):
        ev.evaluate_lm(sae, model, tokens, progress=False)
