"""Tests of the toy-model library (notebook 01): behaviour of trained models, determinism,
input errors, batched-vs-separate training, and smoke tests of its plots and widget."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

from sae_course import toy_models as tm

matplotlib.use("Agg")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- trained behaviour


@pytest.fixture(scope="module")
def five_in_two():
    """5 features in 2-D, importance 0.9**i: 4 instances dense, 4 very sparse (p = 0.02)."""
    torch.manual_seed(0)
    p = torch.tensor([1.0] * 4 + [0.02] * 4).unsqueeze(1)
    model = tm.ToyModel(5, 2, n_inst=8, feature_probability=p,
                        importance=0.9 ** torch.arange(5.0), seed=0)
    tm.train_toy_model(model, n_steps=3000, batch_size=1024, lr=1e-2, seed=0, progress=False)
    with torch.no_grad():
        batch = model.generate_batch(20000, _gen(123))
        eval_loss = model.loss(model(batch), batch)
    return model, eval_loss


def _best(model, eval_loss, instances):
    k = min(instances, key=lambda i: eval_loss[i].item())
    return model.W.detach()[k]


def test_dense_features_keep_only_the_two_most_important(five_in_two):
    model, eval_loss = five_in_two
    W = _best(model, eval_loss, range(4))
    represented = tm.represented_features(W)[0]
    assert represented.tolist() == [True, True, False, False, False], tm.feature_norms(W)
    # the two are orthogonal: each has a dimension of its own
    assert torch.allclose(tm.feature_dimensionality(W)[0, :2], torch.ones(2), atol=0.1)


def test_sparse_features_form_a_pentagon(five_in_two):
    model, eval_loss = five_in_two
    W = _best(model, eval_loss, range(4, 8))
    represented = tm.represented_features(W)[0]
    assert represented.sum() >= 4, tm.feature_norms(W)
    dims = tm.feature_dimensionality(W)[0][represented]
    assert ((dims - 0.4).abs() < 0.1).all(), dims


def test_loss_goes_down_and_sparse_instances_superpose(five_in_two):
    model, _ = five_in_two
    counts = tm.represented_features(model.W.detach()).sum(1)
    assert (counts[4:] > counts[:4].max()).sum() >= 3, counts


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_numbers():
    runs = []
    for _ in range(2):
        model = tm.ToyModel(6, 3, n_inst=2, feature_probability=0.2, seed=7)
        history = tm.train_toy_model(model, 30, 64, 1e-2, seed=11, progress=False)
        runs.append((model.W.detach().clone(), history))
    assert torch.equal(runs[0][0], runs[1][0])
    assert torch.equal(runs[0][1], runs[1][1])
    assert runs[0][1].shape == (30, 2)
    other = tm.ToyModel(6, 3, n_inst=2, seed=8)
    assert not torch.equal(other.W.detach(), tm.ToyModel(6, 3, n_inst=2, seed=7).W.detach())


def test_generators_are_deterministic_and_seed_dependent():
    p = torch.full((2, 3), 0.5)
    for fn in (tm.generate_batch, tm.generate_correlated_batch,
               tm.generate_anticorrelated_batch):
        a, b, c = fn(50, p, _gen(1)), fn(50, p, _gen(1)), fn(50, p, _gen(2))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


# --------------------------------------------------------------------------- batch statistics


def test_generate_batch_statistics():
    p = torch.tensor([[0.0, 0.1, 0.5, 1.0]])
    batch = tm.generate_batch(40000, p, _gen(0))
    assert batch.shape == (40000, 1, 4)
    freq = (batch > 0).float().mean(0)[0]
    assert torch.allclose(freq, p[0], atol=0.01)
    assert 0.49 < batch[batch > 0].mean().item() < 0.51


def test_correlated_pairs_are_together_and_anticorrelated_apart():
    p = torch.tensor([[0.3, 0.1], [0.05, 0.4]])
    corr = tm.generate_correlated_batch(40000, p, _gen(0)) > 0
    assert corr.shape == (40000, 2, 4)
    assert torch.equal(corr[..., 0::2], corr[..., 1::2])
    assert torch.allclose(corr.float().mean(0), p.repeat_interleave(2, -1), atol=0.01)
    anti = tm.generate_anticorrelated_batch(40000, p, _gen(0)) > 0
    assert not (anti[..., 0::2] & anti[..., 1::2]).any()
    assert torch.allclose(anti.float().mean(0), p.repeat_interleave(2, -1), atol=0.01)


def test_generate_batch_keeps_probability_dtype_and_accepts_lists():
    p64 = torch.full((2, 3), 0.5, dtype=torch.float64)
    assert tm.generate_batch(4, p64, _gen(0)).dtype == torch.float64
    assert tm.generate_batch(4, [[0.5, 0.5]], _gen(0)).shape == (4, 1, 2)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: tm.ToyModel(5, 2, 3, feature_probability=1.5), r"must lie in \[0, 1\]"),
        (lambda: tm.ToyModel(5, 2, 3, feature_probability=-0.1), r"must lie in \[0, 1\]"),
        (lambda: tm.ToyModel(5, 2, 3, feature_probability=[0.1, 0.2, 0.3]),
         r"does not broadcast to \(n_inst, n_features\) = \(3, 5\)"),
        (lambda: tm.ToyModel(5, 2, 3, importance=-1.0), "non-negative"),
        (lambda: tm.ToyModel(0, 2), "n_features must be a positive integer"),
        (lambda: tm.ToyModel(5, 2, dtype=torch.int64), "floating-point"),
        (lambda: tm.generate_batch(4, torch.full((2, 3), 1.2)), r"must lie in \[0, 1\]"),
        (lambda: tm.generate_batch(4, torch.full((3,), 0.5)), r"shape \(n_inst, n_features\)"),
        (lambda: tm.generate_batch(0, torch.full((2, 3), 0.5)), "n_batch"),
        (lambda: tm.generate_anticorrelated_batch(4, torch.full((2, 3), 0.6)),
         r"must lie in \[0, 0.5\]"),
        (lambda: tm.importance_weighted_loss(torch.zeros(2, 1, 3), torch.zeros(2, 1, 4), 1.0),
         "must match"),
        (lambda: tm.feature_dimensionality(torch.zeros(5)), "shape"),
    ],
)
def test_bad_input_gives_a_clear_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_feature_count_names_both_sizes():
    model = tm.ToyModel(5, 2, n_inst=3)
    with pytest.raises(ValueError, match=r"6 features .* n_features=5"):
        model(torch.zeros(4, 3, 6))
    with pytest.raises(ValueError, match=r"2 instances .* n_inst=3"):
        model(torch.zeros(4, 2, 5))
    with pytest.raises(ValueError, match=r"\(batch, n_inst, n_features\)"):
        model(torch.zeros(4, 5))


# --------------------------------------------------------------------------- batched == separate


def test_batched_training_equals_separate_training():
    n_inst, n_steps = 3, 25
    p = torch.tensor([[1.0], [0.2], [0.05]])
    importance = 0.9 ** torch.arange(5.0)
    batched = tm.ToyModel(5, 2, n_inst, p, importance, seed=0)
    singles = [batched.instance(k) for k in range(n_inst)]
    batches = [tm.generate_batch(128, batched.feature_probability, _gen(s)) for s in range(n_steps)]
    it = iter(batches)
    history = tm.optimize(batched, lambda: next(it), batched.loss, n_steps, 1e-2)
    for k, single in enumerate(singles):
        it_k = iter(b[:, k : k + 1] for b in batches)
        history_k = tm.optimize(single, lambda it_k=it_k: next(it_k), single.loss, n_steps, 1e-2)
        assert torch.allclose(history[:, k], history_k[:, 0], atol=1e-5, rtol=1e-4)
        assert torch.allclose(batched.W[k], single.W[0], atol=1e-5)
        assert torch.allclose(batched.b_final[k], single.b_final[0], atol=1e-5)


def test_train_separate_gives_independent_single_models():
    models = tm.train_separate(3, 5, 2, feature_probability=[[1.0], [0.1], [0.01]],
                               n_steps=5, batch_size=16, progress=False)
    assert [m.n_inst for m in models] == [1, 1, 1]
    assert models[2].feature_probability[0, 0].item() == pytest.approx(0.01)


# --------------------------------------------------------------------------- model pieces


def test_forward_matches_formula_and_instance_slices():
    model = tm.ToyModel(4, 3, n_inst=2, seed=1)
    with torch.no_grad():
        model.b_final.normal_(generator=_gen(0))
    x = torch.rand(5, 2, 4, generator=_gen(1))
    out = model(x)
    for k in range(2):
        W, b = model.W[k], model.b_final[k]
        assert torch.allclose(out[:, k], torch.relu(x[:, k] @ W.T @ W + b), atol=1e-6)
        assert torch.allclose(model.instance(k)(x[:, k : k + 1])[:, 0], out[:, k])


def test_dtype_and_device_are_respected():
    model = tm.ToyModel(4, 2, n_inst=2, dtype=torch.float64, device="cpu")
    assert model.W.dtype == model.feature_probability.dtype == torch.float64
    batch = model.generate_batch(8, _gen(0))
    assert batch.dtype == torch.float64
    assert model(batch).dtype == torch.float64
    tm.train_toy_model(model, 3, 8, progress=False)


def test_neuron_model_has_nonnegative_neurons_and_differs_from_toy_model():
    neuron = tm.NeuronModel(6, 3, n_inst=2, seed=0)
    toy = tm.ToyModel(6, 3, n_inst=2, seed=0)
    x = torch.rand(10, 2, 6, generator=_gen(0))
    assert (neuron.hidden(x) >= 0).all()
    assert not torch.allclose(neuron(x), toy(x))
    response = tm.neuron_feature_response(neuron)
    assert response.shape == (2, 6, 3)
    assert torch.allclose(response[:, 2], torch.relu(neuron.W.detach()[:, :, 2]))


def test_neuron_analysis_helpers():
    W = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.8, 0.7], [0.0, -1.0, 0.0]]])
    mono = tm.neuron_monosemanticity(W)
    assert mono[0, 0] == 1.0 and mono[0, 2] == 0.0 and 0.5 < mono[0, 1] < 0.6
    assert tm.neuron_features(W) == [[[0], [1, 2], []]]
    assert tm.describe_neurons(W) == ["instance 0: n0:mono[0]  n1:poly[1, 2]  n2:dead"]


# --------------------------------------------------------------------------- analysis


def _pentagon():
    angles = torch.arange(5) * 2 * math.pi / 5
    return torch.stack([angles.cos(), angles.sin()])


def test_dimensionality_of_known_geometries():
    assert torch.allclose(tm.feature_dimensionality(_pentagon()), torch.full((1, 5), 0.4))
    antipodal = torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(tm.feature_dimensionality(antipodal), torch.tensor([[0.5, 0.5, 0.0]]))
    tetra = torch.tensor([[1.0, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]]) / 3**0.5
    assert torch.allclose(tm.feature_dimensionality(tetra), torch.full((1, 4), 0.75), atol=1e-6)
    norms, interference = tm.norms_and_interference(antipodal)
    assert torch.allclose(norms, torch.tensor([[1.0, 1.0, 0.0]]))
    assert torch.allclose(interference, torch.tensor([[1.0, 1.0, 0.0]]))
    assert tm.dimensions_per_feature(_pentagon()).item() == pytest.approx(0.4)


def test_feature_probabilities_log():
    p = tm.feature_probabilities_log(5, low=0.01)
    assert p[0].item() == pytest.approx(1.0) and p[-1].item() == pytest.approx(0.01)
    assert (p[1:] < p[:-1]).all()


# --------------------------------------------------------------------------- plots and widget


def test_plots_return_figures():
    from matplotlib.figure import Figure

    from sae_course import plotting

    model = tm.NeuronModel(5, 2, n_inst=3, feature_probability=[[1.0], [0.1], [0.01]], seed=0)
    p = model.feature_probability
    titles = plotting.probability_titles(p)
    figs = [
        plotting.plot_features_in_2d(model.W, colors=model.importance, titles=titles),
        plotting.plot_features_in_2d(model.W, colors=["r", "r", "b", "b", "g"]),
        plotting.plot_wtw(model.W, model.b_final, titles=titles),
        plotting.plot_sparsity_sweep(model.W, p, importance=model.importance),
        plotting.plot_feature_dimensionality(model.W, p),
        plotting.plot_neuron_weights(model.W, titles=titles),
        plotting.plot_neuron_monosemanticity(tm.neuron_monosemanticity(model.W), p),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    with pytest.raises(ValueError, match="d_hidden = 2"):
        plotting.plot_features_in_2d(torch.zeros(1, 3, 4))
    import matplotlib.pyplot as plt

    plt.close("all")


def test_explorer_builds_and_redraws_headless():
    from sae_course import widgets

    model = widgets.pretrain_explorer_model([1.0, 0.1], [1.0, 0.8], n_steps=3, batch_size=8,
                                            progress=False)
    explorer = widgets.toy_model_explorer(model, [1.0, 0.1], [1.0, 0.8])
    assert (explorer.prob_slider.value, explorer.decay_slider.value) == (1, 1)  # the middle
    drawn = []
    figure = explorer.figure
    explorer.figure = lambda i, j: drawn.append((i, j)) or figure(i, j)
    explorer.prob_slider.value = 0  # each change redraws
    explorer.decay_slider.value = 0
    assert drawn == [(0, 1), (0, 0)]
    assert explorer.index(1, 1) == 3
    assert torch.allclose(model.importance[3], 0.8 ** torch.arange(5.0))
    with pytest.raises(ValueError, match="grid needs"):
        widgets.ToyModelExplorer(model, [1.0], [1.0])


# ----------------------------------------------------- checks accept other correct code


def test_checks_accept_equivalent_implementations(capsys):
    """A check must not reject a correct answer written differently from the reference."""
    import torch.nn.functional as F
    from torch import nn

    from sae_course.checks import toy

    def batch(n, p, g):
        values = torch.rand(n, *p.shape, generator=g, device=p.device)
        coin = torch.rand(n, *p.shape, generator=g, device=p.device)
        return torch.where(coin < p.unsqueeze(0), values, torch.zeros(()))

    def loss(out, x, importance):
        return (((x - out) ** 2) * importance).sum() / x.shape[0]

    def norms_and_interference(W):
        overlaps = (F.normalize(W, dim=1).transpose(-1, -2) @ W) ** 2
        norms = W.norm(dim=1)
        return norms, overlaps.sum(-1) - norms**2

    def regime(W, threshold):
        on = (W**2).sum(1).sqrt() > threshold
        return on[:, 1].long() * (1 + on[:, 0].long())

    def train(model, make_batch, loss_fn, n_steps, lr):
        optimizer = torch.optim.Adam(model.parameters(), lr)
        losses = []
        for _ in range(n_steps):
            optimizer.zero_grad()
            x = make_batch()
            loss = loss_fn(model(x), x)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return torch.stack(losses)

    class Toy(nn.Module):
        def __init__(self, n_features, d_hidden, n_inst=1):
            super().__init__()
            self.W = nn.Parameter(torch.randn(n_inst, d_hidden, n_features))
            self.b_final = nn.Parameter(torch.zeros(n_inst, n_features))

        def forward(self, x):
            h = torch.einsum("bif,ihf->bih", x, self.W)
            return F.relu((h.unsqueeze(-1) * self.W).sum(-2) + self.b_final)

    toy.test_generate_batch(batch)
    toy.test_importance_weighted_loss(loss)
    toy.test_norms_and_interference(norms_and_interference)
    toy.test_extra_feature_regime(regime)
    toy.test_train(train)
    toy.test_toy_model_forward(Toy)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 6


# ----------------------------------------------------- several starts and the phase diagram


def test_best_of_starts_picks_the_lowest_loss_and_counts_stuck_starts():
    loss = torch.tensor([0.30, 0.10, 0.1004, 0.50, 0.20, 0.20])
    best, stuck = tm.best_of_starts(loss, 3)
    assert best.tolist() == [1, 4]
    assert stuck.tolist() == [1, 1]  # 0.1004 is within 5% of 0.10; 0.30 and 0.50 are stuck
    with pytest.raises(ValueError, match="n_starts"):
        tm.best_of_starts(loss, 4)


def test_phase_diagram_tables_and_regimes():
    prob, imp = tm.phase_diagram_tables([1.0, 0.1], [0.5, 2.0, 4.0], n_starts=2)
    assert prob.shape == imp.shape == (12, 2)
    assert torch.allclose(prob[:, 0], torch.tensor([1.0, 1.0, 0.1, 0.1] * 3))
    assert torch.equal(prob[:, 0], prob[:, 1])
    assert imp[:, 0].eq(1).all() and imp[::4, 1].tolist() == [0.5, 2.0, 4.0]
    W = torch.tensor([[[1.0, 0.0]], [[0.0, -1.0]], [[1.0, -0.9]], [[0.0, 0.0]]])
    assert tm.extra_feature_regime(W).tolist() == [0, 1, 2, 0]
    assert tm.extra_feature_regime(W, threshold=0.95).tolist() == [0, 1, 0, 0]
    from sae_course import plotting

    fig = plotting.plot_phase_diagram(torch.tensor([[0, 2], [1, 2]]), [1.0, 0.1], [0.5, 2.0],
                                      n_stuck=torch.tensor([[0, 1], [0, 0]]))
    assert fig.axes[0].images[0].get_array().shape == (2, 2)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_dimensions_per_feature_counts_represented_features():
    W = torch.tensor([[[0.6, 0.0, 0.0], [0.0, 0.6, 0.1]]])  # 2 represented, norms 0.6 not 1
    assert tm.dimensions_per_feature(W).item() == pytest.approx(1.0)
