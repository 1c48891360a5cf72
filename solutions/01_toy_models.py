# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Toy models of superposition
#
# A neural network layer with *d* dimensions can hold *d* features in orthogonal directions
# without any interference. Real models seem to hold far more concepts than they have
# neurons. **Superposition** is the hypothesis that they do so by giving features
# *non-orthogonal* directions, accepting a little interference, which is affordable when
# features are **sparse** (rarely active at the same time).
#
# This notebook rebuilds the main experiments of Elhage et al. (2022),
# *Toy Models of Superposition* ([arXiv 2209.10652](https://arxiv.org/abs/2209.10652),
# [interactive version](https://transformer-circuits.pub/2022/toy_model/index.html)).
# Superposition is the reason sparse autoencoders exist: later notebooks train SAEs to undo
# it, first on these toy models (02), then on GPT-2.
#
# You will write 8 small pieces (each followed by a check cell):
# the model's forward pass, sparse batches, the importance-weighted loss, a training loop,
# a superposition measure, the regimes of the paper's phase diagram, anticorrelated batches
# and a model with neurons. Hints sit in collapsed "Hint" blocks above each exercise; some
# sections ask you to predict a result before you run it, with the answer in a collapsed
# block too. The demonstrations after each exercise use the course library's reference
# implementation (`sae_course.toy_models`), so if you are stuck you can still run the rest.
#
# **What the checks look at.** Beyond the values: gradients, inputs left as they were, the
# input's dtype kept, and where new tensors live. Code written here should also run on a GPU,
# where a tensor made without `device=` (`torch.zeros(n)`, `torch.rand(shape)`) lands on the
# CPU, apart from the inputs; the checks catch that here too, so make new tensors on an
# input's device (`device=x.device`, `torch.zeros_like(x)`).

# %% tags=["setup"]
from collections.abc import Callable

import einops
import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from sae_course import checks, plotting, widgets
from sae_course import toy_models as tm
from sae_course.settings import get_settings, seed_everything

settings = get_settings()
device = settings.device
seed_everything(settings.seed)
print(settings)

# %% [markdown]
# ## 1. The toy model
#
# **Why.** We want the simplest setting where we *know* the features: a synthetic input
# `x` with `n_features` coordinates, each one a feature. The model must squeeze them into
# `d_hidden < n_features` dimensions and reconstruct them:
#
# $$h = W x, \qquad x' = \mathrm{ReLU}(W^\top h + b), \qquad W \in \mathbb{R}^{d_{hidden} \times n_{features}}.$$
#
# Column $W_i$ is the direction feature $i$ gets in the hidden space. If two columns
# overlap, reading one feature back picks up the other: that is *interference*. The final
# ReLU and the (usually negative) bias can filter out small interference, which is what
# makes superposition worth it (a purely linear model never uses superposition).
#
# **Instances.** We will train many small models with different settings at once, so every
# tensor gets a leading instance dimension: `W` is `[n_inst, d_hidden, n_features]`,
# `b_final` is `[n_inst, n_features]` and a batch is `[batch, n_inst, n_features]`. One
# `einsum` then runs all instances in parallel.
#
# **Exercise.** Write `forward`. Expect: the check prints one line starting with a tick.
#
# <details><summary>Hint</summary>
#
# Project into the hidden space with one einsum (sum over features), back out with a second
# one (sum over hidden), add the bias, then apply the ReLU.
# </details>

# %%
class ToyModel(nn.Module):
    """n_inst toy models side by side: h = W x, x' = ReLU(W^T h + b)."""

    def __init__(self, n_features: int, d_hidden: int, n_inst: int = 1):
        super().__init__()
        std = (2 / (n_features + d_hidden)) ** 0.5
        self.W = nn.Parameter(torch.randn(n_inst, d_hidden, n_features) * std)
        self.b_final = nn.Parameter(torch.zeros(n_inst, n_features))

    def forward(self, features: Tensor) -> Tensor:
        """features: [batch, n_inst, n_features] -> reconstruction of the same shape."""
        # EXERCISE toy_model_forward
        hidden = einops.einsum(self.W, features, "inst hid feat, batch inst feat -> batch inst hid")
        out = einops.einsum(self.W, hidden, "inst hid feat, batch inst hid -> batch inst feat")
        return torch.relu(out + self.b_final)
        # END EXERCISE


# %%
checks.toy.test_toy_model_forward(ToyModel)

# %% [markdown]
# ## 2. Sparse features
#
# **Why.** Sparsity is the knob that turns superposition on. In the paper each feature is
# zero with probability $S$ (the *sparsity*) and otherwise uniform in $[0, 1]$. We write
# the probability of being present as $p = 1 - S$; every instance can have its own $p$
# per feature, so `feature_probability` is a `[n_inst, n_features]` table.
#
# **Exercise.** Draw a batch with a `torch.Generator` so it is reproducible. The check
# compares your numbers with the reference under the same seed, so draw in this order:
# first all the values, then the mask (one `torch.rand` call of the full shape each).
# Expect: about a fraction $p$ of each feature's entries to be non-zero.
#
# <details><summary>Hint</summary>
#
# `shape = (n_batch, *feature_probability.shape)`; compare a second uniform draw with the
# probabilities to get a boolean mask (broadcasting does the rest), then multiply. Draw on the
# probabilities' device (`device=feature_probability.device`): on a GPU, a tensor made without
# `device=` lands on the CPU, apart from the inputs.
# </details>

# %%
def generate_batch(n_batch: int, feature_probability: Tensor, generator: torch.Generator) -> Tensor:
    """Sparse features [n_batch, n_inst, n_features]: feature (inst, i) is uniform in [0, 1]
    with probability feature_probability[inst, i] and 0 otherwise."""
    # EXERCISE generate_batch
    shape = (n_batch, *feature_probability.shape)
    device = feature_probability.device
    values = torch.rand(shape, generator=generator, device=device)
    mask = torch.rand(shape, generator=generator, device=device) < feature_probability
    return values * mask
    # END EXERCISE


# %%
checks.toy.test_generate_batch(generate_batch)

# %% [markdown]
# ## 3. The importance-weighted loss
#
# **Why.** Features differ in how much they matter. The paper weights each feature's
# squared error by an *importance* $I_i$:
#
# $$L = \mathbb{E}_x \sum_i I_i \, (x_i - x'_i)^2 .$$
#
# Importance decides *which* features win the scarce dimensions. In this course the loss is
# averaged over the batch, summed over features, and **summed over instances**: summing
# keeps each instance's gradient exactly what it would be if it were trained alone.
#
# **Exercise.** `importance` is anything that broadcasts to `[n_inst, n_features]`.
# Expect: a scalar, and 0 for a perfect reconstruction. The loss trains the model, so the
# check also compares its gradient with the reference's.
#
# <details><summary>Hint</summary>
#
# Square the error, multiply by the importance, average over dim 0, sum the rest.
# </details>

# %%
def importance_weighted_loss(out: Tensor, features: Tensor, importance: Tensor) -> Tensor:
    """Mean over the batch of sum_i importance_i * (features_i - out_i)^2, summed over
    instances. out, features: [batch, n_inst, n_features]. Returns a scalar."""
    # EXERCISE importance_weighted_loss
    squared_error = (features - out) ** 2
    weighted = importance * squared_error
    return weighted.mean(dim=0).sum()
    # END EXERCISE


# %%
checks.toy.test_importance_weighted_loss(importance_weighted_loss)

# %% [markdown]
# ## 4. Training all instances at once
#
# **Why.** Because the loss is a sum over instances and Adam updates each weight on its
# own, one optimiser over the batched model trains every instance independently, in
# parallel. (`benchmarks/toy_batched.py` times this against a loop over separate models.)
#
# **Exercise.** A plain Adam loop. It takes everything it needs as arguments: the model,
# a function `make_batch()` returning a fresh batch, and `loss_fn(out, batch)`.
# Expect: the returned losses to go down.
#
# <details><summary>Hint</summary>
#
# Build the optimiser once; each step: one batch, forward, loss, zero the gradients,
# backward, step; keep `loss.item()` (a float: keeping the tensors would keep memory too).
# </details>

# %%
def train(
    model: nn.Module,
    make_batch: Callable[[], Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    n_steps: int,
    lr: float,
) -> list[float]:
    """Train `model` with Adam(lr) for n_steps, one new batch per step.
    Returns the loss of every step (recorded before that step's update)."""
    # EXERCISE train
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(n_steps):
        batch = make_batch()
        loss = loss_fn(model(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
    # END EXERCISE


# %%
checks.toy.test_train(train)

# %% [markdown]
# ## 5. Five features in two dimensions
#
# Now the paper's first experiment with a nonlinearity: 5 features, 2 hidden dimensions,
# importance $0.9^i$ (feature 0 matters most), and 8 sparsity levels. From here on we use the
# library's reference implementation (`tm.ToyModel`, `tm.train_toy_model`: the same pieces
# you wrote, plus a cosine learning-rate decay and a progress bar).
#
# **Several starts.** Gradient descent can end in a local minimum, for instance one where
# the most important feature gets no direction. Because instances are free, we train a few
# random starts per sparsity level side by side (instance `k * n_starts + s` is level `k`,
# start `s`, each with its own initial `W`), measure every instance's loss on one fresh
# batch (`tm.evaluation_loss`), and keep the lowest per level (`tm.best_of_starts`, which
# also counts the starts that got stuck: more than 5%, and more than 0.001, above the best).
#
# **Predict, then reveal.** Each panel below will draw the columns $W_i$ as lines from the
# origin (yellow = most important). For dense features ($1-S = 1$), how many of the 5
# features will get a direction, and at what angle to each other?
#
# <details><summary>Answer</summary>
#
# Two, the two most important, at right angles; the other three get no direction at all
# (this is what PCA would do). As features get sparser, more squeeze in: first as
# **antipodal pairs** ($W_j \approx -W_i$: the two are rarely on together, and when one is on
# the other reads a negative value, which the ReLU removes), and when very sparse all 5 in a
# **pentagon**.
# </details>

# %%
n_steps_2d = settings.scale(ci=1500, laptop=5000, gpu=10000)
n_starts_2d = settings.scale(ci=3, laptop=4, gpu=8)
probs_2d = torch.tensor([1.0, 0.3, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005])
importance_2d = 0.9 ** torch.arange(5.0)
model_2d = tm.ToyModel(
    n_features=5, d_hidden=2, n_inst=len(probs_2d) * n_starts_2d,
    feature_probability=probs_2d.repeat_interleave(n_starts_2d).unsqueeze(1),
    importance=importance_2d, seed=settings.seed, device=device,
)
tm.train_toy_model(model_2d, n_steps_2d, batch_size=1024, lr=3e-2, seed=settings.seed)
loss_all_2d = tm.evaluation_loss(model_2d)
best_2d, stuck_2d = tm.best_of_starts(loss_all_2d, n_starts_2d)
W_2d, b_2d = model_2d.W.detach()[best_2d], model_2d.b_final.detach()[best_2d]
represented_2d = tm.represented_features(W_2d)
for k, p in enumerate(probs_2d.tolist()):
    group = loss_all_2d[k * n_starts_2d:(k + 1) * n_starts_2d]
    print(f"1-S = {p:<6.3g} best loss {group.min().item():.4f} (worst start "
          f"{group.max().item():.4f}), {int(stuck_2d[k])} of {n_starts_2d} starts stuck higher; "
          f"best represents features {represented_2d[k].nonzero().flatten().tolist()}")

# %%
plotting.plot_features_in_2d(
    W_2d, colors=importance_2d, titles=plotting.probability_titles(probs_2d),
    suptitle="5 features in 2-D, best of each level's starts: dense (top left) to sparse",
)
plt.show()

# %% [markdown]
# ### $W^\top W$ and the bias
#
# $W^\top W$ is the linear part of the map $x \mapsto x'$. Its diagonal says how strongly
# each feature is written and read; off-diagonal entries are interference between features.
# **Expect:** for dense features a diagonal with two ones and zeros elsewhere, the bias
# holding the ignored features at their mean; for sparse features negative
# off-diagonal entries (antipodal pairs, the pentagon's neighbours) and a negative bias that
# cuts the interference away.

# %%
plotting.plot_wtw(W_2d, b_2d, titles=plotting.probability_titles(probs_2d))
plt.show()

# %% [markdown]
# ## 6. Superposition grows with sparsity
#
# **Why.** How much a model superposes depends on sparsity: as features get sparser, each
# one goes from not represented to fully represented, over a narrow range of sparsity
# (section 8 isolates this change in the paper's phase diagram). We measure two things per
# feature, as the paper's plots of $\lVert W_i \rVert$ do: its norm (is it represented at all?) and how much other
# features share its direction, $\sum_{j \ne i} (\hat W_i \cdot W_j)^2$ with
# $\hat W_i = W_i / \lVert W_i \rVert$ (0 means the feature has a direction of its own).
#
# **Exercise.** Compute both for every instance. A feature with a zero column has no
# direction: give it 0 interference, not NaN (clamp the norm before dividing).
#
# <details><summary>Hint</summary>
#
# All dot products at once with an einsum `"inst hid i, inst hid j -> inst i j"` (normalise
# only the first factor); square them and mask out the diagonal with `torch.eye`.
# </details>

# %%
def norms_and_interference(W: Tensor) -> tuple[Tensor, Tensor]:
    """W: [n_inst, d_hidden, n_features]. Returns (norms, interference), each
    [n_inst, n_features]: ||W_i|| and sum over j != i of (W_hat_i . W_j)^2."""
    # EXERCISE norms_and_interference
    norms = W.norm(dim=1)
    W_hat = W / norms.clamp_min(1e-8).unsqueeze(1)
    overlaps = einops.einsum(W_hat, W, "inst hid i, inst hid j -> inst i j") ** 2
    own = torch.eye(W.shape[-1], device=W.device, dtype=W.dtype)
    interference = (overlaps * (1 - own)).sum(dim=-1)
    return norms, interference
    # END EXERCISE


# %%
checks.toy.test_norms_and_interference(norms_and_interference)

# %% [markdown]
# Now a bigger sweep with the reference implementation: more features than dimensions,
# all equally important, and one instance per sparsity level from dense to sparse.
# A single number says whether a model superposes: $\lVert W \rVert_F^2 = \sum_i \lVert W_i \rVert^2$.
# Without superposition it is at most `d_hidden` (a set of orthogonal unit columns, or any
# projection onto a `d_hidden`-dimensional subspace, has exactly `d_hidden`); more than
# `d_hidden` means more features are written than there are dimensions.
# **Expect** (at every budget):
# - dense ($1/(1-S) = 1$): no superposition, $\lVert W \rVert_F^2 \approx$ `d_hidden`. Since all
#   features are equally important, any `d_hidden`-dimensional subspace is as good as
#   another, so the norms spread out between 0 and 1 instead of picking whole features. The
#   printed interference of this instance is not superposition: its columns are the shadows
#   of the features on one subspace, so they overlap, but they add up to no more than
#   `d_hidden` dimensions;
# - as sparsity grows, $\lVert W \rVert_F^2$ climbs well past `d_hidden`, and the norms split
#   into two groups, about 0 (dropped) and about 1 (represented).

# %%
n_features_sw = settings.scale(ci=24, laptop=60, gpu=200)
d_hidden_sw = settings.scale(ci=6, laptop=12, gpu=20)
n_inst_sw = settings.scale(ci=10, laptop=16, gpu=40)
batch_sw = settings.scale(ci=512, laptop=1024, gpu=2048)
n_steps_sw = settings.scale(ci=1500, laptop=4000, gpu=10000)
probs_sw = tm.feature_probabilities_log(n_inst_sw, low=settings.scale(ci=0.05, laptop=0.02, gpu=0.01))
model_sw = tm.ToyModel(
    n_features=n_features_sw, d_hidden=d_hidden_sw, n_inst=n_inst_sw,
    feature_probability=probs_sw.unsqueeze(1), importance=1.0,
    seed=settings.seed, device=device,
)
tm.train_toy_model(model_sw, n_steps_sw, batch_size=batch_sw, lr=1e-2, seed=settings.seed)
norms_sw, interference_sw = tm.norms_and_interference(model_sw.W.detach())
print(f"d_hidden = {d_hidden_sw}, n_features = {n_features_sw}")
for p, n, i in zip(probs_sw.tolist(), norms_sw, interference_sw, strict=True):
    represented = n > 0.5
    print(f"1-S = {p:.3f}: ||W||_F^2 = {(n**2).sum().item():5.1f}, "
          f"{int(represented.sum()):3d} features with norm > 0.5, their mean interference "
          f"{i[represented].mean().item() if represented.any() else 0:.2f}")

# %%
plotting.plot_sparsity_sweep(model_sw.W, probs_sw)
plt.show()

# %% [markdown]
# ## 7. Feature dimensionality and geometry
#
# **Why.** How many dimensions does one feature get? The paper defines the
# *dimensionality* of feature $i$ as
#
# $$D_i = \frac{\lVert W_i \rVert^2}{\sum_j (\hat W_i \cdot W_j)^2}.$$
#
# The numerator is how strongly it is represented, the denominator counts (weighted by
# overlap) how many features share its direction, itself included: it is your
# interference plus the feature's own term $\lVert W_i \rVert^2$. A feature alone in its
# dimension has $D_i = 1$, each member of an antipodal pair $1/2$, a triangle $2/3$, a
# tetrahedron in 3-D $3/4$, a missing feature 0. (The library computes it:
# `tm.feature_dimensionality`, from the same overlaps you just wrote.)
#
# **Predict, then reveal.** The sparsest 5-feature model of section 5 is a pentagon of five
# equal columns in a plane. What is each feature's $D_i$?
#
# <details><summary>Answer</summary>
#
# $2/5$. Two dimensions shared by five features: for a regular pentagon of unit columns the
# squared overlaps with the others add up to $3/2$, so $D_i = 1 / (1 + 3/2) = 2/5$. The cell
# below prints the measured values.
# </details>
#
# The paper's striking result (section "The Geometry of Superposition"): as sparsity grows
# the dimensionalities do not slide smoothly, they **stick to a few fractions**, each a
# geometric arrangement (the horizontal lines). The black line is the average number of
# dimensions per represented feature, `d_hidden` divided by the number of features with
# norm above 0.5 (the paper writes $d_{hidden} / \lVert W \rVert_F^2$, the same number
# when represented features have norm 1; counting them does not assume it). For the dense
# instance, whose norms spread out between 0 and 1, "represented" is ambiguous and its
# point on the line says little.
# **Expect** (at the small `ci` size the picture is noisier than the paper's): scattered
# values for dense features (the spread-out norms from before), then clusters, e.g. at 1/2
# (antipodal pairs), with fewer points in between; the sparsest models crowd all features
# in at about `d_hidden / n_features` each.

# %%
plotting.plot_feature_dimensionality(model_sw.W, probs_sw)
plt.show()
dims_2d = tm.feature_dimensionality(W_2d)
print(f"5 features in 2-D, 1-S = {probs_2d[-1].item():.3g} (best start): D =",
      [round(d, 2) for d in dims_2d[-1].tolist()], "(a regular pentagon gives 0.4 each)")

# %% [markdown]
# ## 8. The phase diagram
#
# **Why.** Section 6 watched many features at once. The paper's phase diagram (section
# "Superposition as a Phase Change") isolates the decision in the smallest possible model:
# **2 features in 1 dimension**. Feature 0 has importance 1; the *extra* feature 1 has a
# relative importance $r$; both have the same density $1-S$. The single dimension can hold
# feature 0, the extra feature, or both (antipodal, $W_1 \approx -W_0$, which is
# superposition). So the extra feature ends in one of three regimes:
#
# | regime | extra feature | feature 0 |
# |---|---|---|
# | 0: not represented | norm $\le$ threshold | any |
# | 1: dedicated dimension | represented | not represented |
# | 2: superposition | represented | represented |
#
# **Exercise.** Classify each instance (a feature is represented when its column norm is
# strictly above `threshold`). Return integers, one per instance.
#
# <details><summary>Hint</summary>
#
# `W.norm(dim=1)` gives `[n_inst, 2]` norms; compare with the threshold, then fill a
# `torch.long` tensor of zeros with 1 and 2 through two boolean masks.
# </details>

# %%
def extra_feature_regime(W: Tensor, threshold: float) -> Tensor:
    """W: [n_inst, d_hidden, 2], feature 0 then the extra feature 1. Returns [n_inst] long:
    0 the extra feature is not represented (norm <= threshold), 1 it has a dedicated
    dimension (represented, feature 0 not), 2 superposition (both represented)."""
    # EXERCISE extra_feature_regime
    norms = W.norm(dim=1)
    represented = norms > threshold
    main, extra = represented[:, 0], represented[:, 1]
    regime = torch.zeros(W.shape[0], dtype=torch.long, device=W.device)
    regime[extra & ~main] = 1
    regime[extra & main] = 2
    return regime
    # END EXERCISE


# %%
checks.toy.test_extra_feature_regime(extra_feature_regime)

# %% [markdown]
# Now the diagram, with the reference `tm.extra_feature_regime` (threshold 0.5): one batched
# model holds every (relative importance, density) cell times a few random starts
# (`tm.phase_diagram_tables` builds the probability and importance tables), and each cell
# shows its lowest-loss start. A number in a cell counts the starts that got stuck (more
# than 5%, and more than 0.001, above that cell's best loss).
#
# **Predict, then reveal.** Which regime do you expect (a) for dense features with $r < 1$,
# (b) for dense features with $r > 1$, (c) for sparse features with $r$ near 1?
#
# <details><summary>Answer</summary>
#
# (a) not represented: the dimension goes to the more important feature 0; (b) dedicated
# dimension: the extra feature is now the more important one, and feature 0 is dropped;
# (c) superposition: the two are rarely active together, so sharing the dimension
# antipodally costs little and keeps both. As the features get sparser the superposition
# region widens to smaller and larger $r$. The boundaries are sharp: the regime jumps
# between neighbouring cells rather than fading, which is why the paper calls it a phase
# change. Near the boundaries a cell can flip between runs, and some starts get stuck.
# </details>

# %%
n_steps_pd = settings.scale(ci=1500, laptop=3000, gpu=6000)
n_starts_pd = settings.scale(ci=2, laptop=3, gpu=4)
densities_pd = tm.feature_probabilities_log(settings.scale(ci=6, laptop=8, gpu=10), low=0.03)
importances_pd = torch.logspace(-1, 1, settings.scale(ci=6, laptop=9, gpu=11))
prob_pd, imp_pd = tm.phase_diagram_tables(densities_pd.tolist(), importances_pd.tolist(),
                                          n_starts_pd)
model_pd = tm.ToyModel(
    n_features=2, d_hidden=1, n_inst=len(prob_pd), feature_probability=prob_pd,
    importance=imp_pd, seed=settings.seed, device=device,
)
tm.train_toy_model(model_pd, n_steps_pd, batch_size=512, lr=3e-2, seed=settings.seed)
best_pd, stuck_pd = tm.best_of_starts(tm.evaluation_loss(model_pd), n_starts_pd)
grid_pd = (len(importances_pd), len(densities_pd))
regimes_pd = tm.extra_feature_regime(model_pd.W.detach()[best_pd]).reshape(grid_pd)
plotting.plot_phase_diagram(regimes_pd, densities_pd, importances_pd,
                            n_stuck=stuck_pd.reshape(grid_pd))
plt.show()
for code, name in enumerate(tm.EXTRA_FEATURE_REGIMES):
    print(f"{name:>20}: {int((regimes_pd == code).sum())} of {regimes_pd.numel()} cells")
print(f"cells where at least one of {n_starts_pd} starts got stuck: "
      f"{int((stuck_pd > 0).sum())} of {regimes_pd.numel()}")

# %% [markdown]
# ## 9. Correlated and anticorrelated features
#
# **Why.** Interference costs something only when features are active *together*. So
# which features share directions depends on how they co-occur (paper section
# "Superposition and correlated features"):
# - **correlated** features (both present or both absent) would interfere every time they
#   appear, so the model prefers to make them **orthogonal**;
# - **anticorrelated** features (at most one present) never interfere, so the model happily
#   puts them **antipodal**.
#
# The pairs are features $2k$ and $2k+1$. In an anticorrelated pair, the pair is active with
# probability $2p$ and then a fair coin picks which one of the two is present, so each
# feature on its own is still present with probability $p$.
#
# **Exercise.** Draw an anticorrelated batch. Draw in this order (the check compares
# numbers under the same seed): the values `[n_batch, n_inst, 2 * n_pairs]`, then the pair
# activity `[n_batch, n_inst, n_pairs]`, then the coin (same shape; the first feature of
# the pair is present when the coin is below 0.5).
#
# <details><summary>Hint</summary>
#
# Build the two masks of a pair (`pair_active & first`, `pair_active & ~first`),
# `torch.stack` them on a new last dimension and flatten the last two dimensions, so the
# pair's features end up next to each other.
# </details>

# %%
def generate_anticorrelated_batch(n_batch: int, feature_probability: Tensor, generator: torch.Generator) -> Tensor:
    """feature_probability: [n_inst, n_pairs], entries <= 0.5.
    Returns [n_batch, n_inst, 2 * n_pairs], features 2k and 2k+1 forming pair k."""
    # EXERCISE generate_anticorrelated_batch
    n_inst, n_pairs = feature_probability.shape
    device = feature_probability.device
    values = torch.rand((n_batch, n_inst, 2 * n_pairs), generator=generator, device=device)
    pair_active = torch.rand((n_batch, n_inst, n_pairs), generator=generator, device=device) < 2 * feature_probability
    first = torch.rand((n_batch, n_inst, n_pairs), generator=generator, device=device) < 0.5
    mask = torch.stack([pair_active & first, pair_active & ~first], dim=-1).flatten(-2)
    return values * mask
    # END EXERCISE


# %%
checks.toy.test_generate_anticorrelated_batch(generate_anticorrelated_batch)

# %% [markdown]
# Now train 2-D models on 2 pairs (4 features) with the reference generators
# `tm.generate_correlated_batch` and `tm.generate_anticorrelated_batch`: one batched model
# whose first 4 instances (4 random starts) see correlated pairs, 1-S = 0.05, and whose last
# 4 see anticorrelated pairs, 1-S = 0.25. Colours mark the pairs (pair 0 blue, pair 1 red);
# each panel's title gives its loss on a fresh batch, and a star marks the best start of
# each kind.
#
# **Predict, then reveal.** Where will an anticorrelated pair's two features point, relative
# to each other, in the best start?
#
# <details><summary>Answer</summary>
#
# Opposite ways (cosine -1): antipodal on one line through the origin, where they
# interfere with nothing, since at most one of them is ever active. Correlated features
# instead end up at right angles (cosine about 0), since they would interfere every time
# they appear. Some anticorrelated starts get stuck in a local minimum, where each feature
# is antipodal to a feature of the *other* pair; they pay interference when the two pairs
# are active together, so their loss is higher. The line under the figure counts them.
# (With denser correlated features, e.g. 1-S = 0.25, a correlated pair can even collapse
# onto one shared direction: try it.)
# </details>

# %%
n_steps_corr = settings.scale(ci=1500, laptop=4000, gpu=8000)
n_starts_corr = 4
corr_p = torch.full((n_starts_corr, 2), 0.05, device=device)
anti_p = torch.full((n_starts_corr, 2), 0.25, device=device)


def correlated_then_anticorrelated(n_batch: int, generator: torch.Generator) -> Tensor:
    """Instances 0-3: correlated pairs; instances 4-7: anticorrelated pairs."""
    return torch.cat([tm.generate_correlated_batch(n_batch, corr_p, generator),
                      tm.generate_anticorrelated_batch(n_batch, anti_p, generator)], dim=1)


corr_model = tm.ToyModel(n_features=4, d_hidden=2, n_inst=2 * n_starts_corr,
                         seed=settings.seed, device=device)
tm.train_toy_model(corr_model, n_steps_corr, batch_size=1024, lr=1e-2, seed=settings.seed,
                   batch_fn=correlated_then_anticorrelated)
eval_loss = tm.evaluation_loss(corr_model, batch_fn=correlated_then_anticorrelated)
best_corr, stuck_corr = tm.best_of_starts(eval_loss, n_starts_corr)
kinds = ["correlated", "anticorrelated"]
titles = [f"{kinds[k // n_starts_corr]} #{k % n_starts_corr}: {eval_loss[k].item():.4f}"
          + (" \N{BLACK STAR}" if k in best_corr.tolist() else "") for k in range(8)]
plotting.plot_features_in_2d(corr_model.W, colors=["tab:blue", "tab:blue", "tab:red", "tab:red"],
                             titles=titles)
plt.show()

# %%
W_hat = corr_model.W.detach() / corr_model.W.detach().norm(dim=1, keepdim=True).clamp_min(1e-8)
for k in range(2 * n_starts_corr):
    cos0 = (W_hat[k, :, 0] @ W_hat[k, :, 1]).item()
    cos1 = (W_hat[k, :, 2] @ W_hat[k, :, 3]).item()
    print(f"{kinds[k // n_starts_corr]:>14} #{k % n_starts_corr}: cosine within pair 0 "
          f"{cos0:+.2f}, pair 1 {cos1:+.2f}, loss {eval_loss[k].item():.4f}"
          + ("  <- best" if k in best_corr.tolist() else ""))
for kind, n_stuck in zip(kinds, stuck_corr.tolist(), strict=True):
    print(f"{kind}: {n_stuck} of {n_starts_corr} starts stuck "
          "(loss more than 5% and 0.001 above the best)")

# %% [markdown]
# ## 10. Neurons: superposition in a privileged basis
#
# **Why.** In the model so far any rotation of the hidden space is as good as any other,
# so the hidden dimensions mean nothing on their own. Real networks apply a nonlinearity
# per neuron, which makes the neuron basis *privileged*: now we can ask what each
# neuron does. The paper's neuron model puts a ReLU on the hidden layer:
#
# $$h = \mathrm{ReLU}(W x), \qquad x' = \mathrm{ReLU}(W^\top h + b).$$
#
# **Exercise.** Write its forward pass.
#
# <details><summary>Hint</summary>
#
# Like `ToyModel.forward` with one more ReLU, on the hidden layer.
# </details>

# %%
class NeuronModel(nn.Module):
    """n_inst neuron models: h = ReLU(W x), x' = ReLU(W^T h + b)."""

    def __init__(self, n_features: int, d_hidden: int, n_inst: int = 1):
        super().__init__()
        std = (2 / (n_features + d_hidden)) ** 0.5
        self.W = nn.Parameter(torch.randn(n_inst, d_hidden, n_features) * std)
        self.b_final = nn.Parameter(torch.zeros(n_inst, n_features))

    def forward(self, features: Tensor) -> Tensor:
        """features: [batch, n_inst, n_features] -> reconstruction of the same shape."""
        # EXERCISE neuron_model_forward
        hidden = torch.relu(einops.einsum(self.W, features, "inst hid feat, batch inst feat -> batch inst hid"))
        out = einops.einsum(self.W, hidden, "inst hid feat, batch inst hid -> batch inst feat")
        return torch.relu(out + self.b_final)
        # END EXERCISE


# %%
checks.toy.test_neuron_model_forward(NeuronModel)

# %% [markdown]
# The paper's setting: 10 features, 5 neurons, importance $0.75^i$, a range of sparsities
# (reference `tm.NeuronModel`). Each panel shows $W$ with neurons as rows and features as
# columns (colours scaled per panel). **What to expect:**
# - dense: neurons are mostly **monosemantic**, each devoted to one of the most important
#   features (one red cell per row); the less important features are dropped;
# - sparse: neurons become **polysemantic**, one neuron carrying several features (several
#   red cells in a row), and more features are represented than there are neurons.
#
# This is the phenomenon SAEs are built to undo: a neuron that responds to several
# unrelated features cannot be read on its own.

# %%
n_steps_neuron = settings.scale(ci=2500, laptop=6000, gpu=10000)
probs_neuron = torch.tensor([1.0, 0.3, 0.1, 0.03, 0.01])
neuron_model = tm.NeuronModel(
    n_features=10, d_hidden=5, n_inst=len(probs_neuron),
    feature_probability=probs_neuron.unsqueeze(1), importance=0.75 ** torch.arange(10.0),
    seed=settings.seed, device=device,
)
tm.train_toy_model(neuron_model, n_steps_neuron, batch_size=512, lr=3e-2, seed=settings.seed)
plotting.plot_neuron_weights(neuron_model.W, titles=plotting.probability_titles(probs_neuron))
plt.show()

# %% [markdown]
# What does each neuron do? `tm.describe_neurons` lists, per neuron, the features with a
# sizeable positive weight (`mono` = one feature, `poly` = several, `dead` = none), and
# `tm.neuron_monosemanticity` gives the share of a neuron's (positive) input weight that
# goes to its top feature. **Expect** the share to fall as features get sparser, while
# the number of features represented rises past the 5 neurons. (At the small `ci` budget
# training is short, so the pattern is noisier than with `laptop` or `gpu`.)

# %%
for p, line in zip(probs_neuron.tolist(), tm.describe_neurons(neuron_model.W), strict=True):
    print(f"1-S = {p:<6.3g}", line.split(": ", 1)[1])
mono = tm.neuron_monosemanticity(neuron_model.W.detach())
print("features represented:", tm.represented_features(neuron_model.W.detach()).sum(1).tolist())
plotting.plot_neuron_monosemanticity(mono, probs_neuron)
plt.show()

# %% [markdown]
# ## 11. Explore
#
# The widget below holds a grid of pre-trained 5-feature, 2-D models, one per sparsity and
# importance decay (importance of feature $i$ = decay$^i$). Move the sliders: with decay 1
# all features are equal and sparsity alone decides the geometry; with a steep decay the
# less important features are dropped first, and only a lot of sparsity brings them back.
# (Run headless, as in the tests, it shows its first state only.)

# %%
explorer_probs = [1.0, 0.3, 0.1, 0.03, 0.01]
explorer_decays = [1.0, 0.9, 0.7]
explorer_model = widgets.pretrain_explorer_model(
    explorer_probs, explorer_decays, n_steps=settings.scale(ci=1000, laptop=4000, gpu=8000),
    seed=settings.seed, device=device,
)
widgets.toy_model_explorer(explorer_model, explorer_probs, explorer_decays)

# %% [markdown]
# ## Summary
#
# - A model can represent more features than dimensions by superposing them; it does so
#   only when features are sparse, and the importance of a feature decides whether it gets
#   a direction at all.
# - Whether a feature gets a direction of its own, none, or a shared one changes sharply
#   with sparsity and relative importance (the phase diagram), and the geometry is discrete:
#   antipodal pairs, triangles, pentagons, tetrahedra, visible as fractions in the feature
#   dimensionality.
# - Correlated features are kept orthogonal; anticorrelated ones can share a line
#   (antipodal) at no cost, though training does not always find that arrangement: train
#   several starts (free with the batched model) and keep the best.
# - With a privileged basis, superposition shows up as polysemantic neurons.
#
# Next, notebook 02 trains sparse autoencoders on exactly these toy models and checks
# whether they recover the true features. Further reading: the paper's sections on
# superposition as compression, the geometry of superposition, and learning dynamics
# ([transformer-circuits.pub/2022/toy_model](https://transformer-circuits.pub/2022/toy_model/index.html)).
