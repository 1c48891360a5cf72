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
# a superposition measure, feature dimensionality, anticorrelated batches and a model with
# neurons. The demonstrations after each exercise use the course library's reference
# implementation (`sae_course.toy_models`), so if you are stuck you can still run the rest.

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
        # Hint: project into the hidden space with one einsum (sum over features), back out
        # with a second one (sum over hidden), add the bias, then apply the ReLU.
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

# %%
def generate_batch(n_batch: int, feature_probability: Tensor, generator: torch.Generator) -> Tensor:
    """Sparse features [n_batch, n_inst, n_features]: feature (inst, i) is uniform in [0, 1]
    with probability feature_probability[inst, i] and 0 otherwise."""
    # Hint: shape = (n_batch, *feature_probability.shape); compare a second uniform draw
    # with the probabilities to get a boolean mask (broadcasting does the rest).
    # EXERCISE generate_batch
    shape = (n_batch, *feature_probability.shape)
    values = torch.rand(shape, generator=generator)
    mask = torch.rand(shape, generator=generator) < feature_probability
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
# Expect: a scalar, and 0 for a perfect reconstruction.

# %%
def importance_weighted_loss(out: Tensor, features: Tensor, importance: Tensor) -> Tensor:
    """Mean over the batch of sum_i importance_i * (features_i - out_i)^2, summed over
    instances. out, features: [batch, n_inst, n_features]. Returns a scalar."""
    # Hint: square the error, multiply by the importance, average over dim 0, sum the rest.
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
    # Hint: build the optimiser once; each step: batch, forward, loss, zero the gradients,
    # backward, step; keep loss.item().
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
# importance $0.9^i$ (feature 0 matters most), and one instance per sparsity level.
# From here on we use the library's reference implementation (`tm.ToyModel`,
# `tm.train_toy_model`: the same pieces you wrote, plus a cosine learning-rate decay and a
# progress bar).
#
# **What to expect** (each panel draws the columns $W_i$ as lines from the origin,
# yellow = most important):
# - dense features ($1-S = 1$): only the 2 most important features, orthogonal; the others
#   get no direction at all (like PCA);
# - sparser: more features squeeze in, first as **antipodal pairs** ($W_j \approx -W_i$:
#   the two are rarely on together, and when one is on the other reads a negative value,
#   which the ReLU removes);
# - very sparse: all 5 features in a **pentagon**.

# %%
n_steps_2d = settings.scale(ci=1500, laptop=5000, gpu=10000)
probs_2d = torch.tensor([1.0, 0.3, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005])
importance_2d = 0.9 ** torch.arange(5.0)
model_2d = tm.ToyModel(
    n_features=5, d_hidden=2, n_inst=len(probs_2d),
    feature_probability=probs_2d.unsqueeze(1), importance=importance_2d,
    seed=settings.seed, device=device,
)
loss_2d = tm.train_toy_model(model_2d, n_steps_2d, batch_size=1024, lr=3e-2, seed=settings.seed)
print("final loss per instance:", [round(v, 4) for v in loss_2d[-100:].mean(0).tolist()])

# %%
plotting.plot_features_in_2d(
    model_2d.W, colors=importance_2d, titles=plotting.probability_titles(probs_2d),
    suptitle="5 features in 2 dimensions, from dense (left) to sparse (right)",
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
plotting.plot_wtw(model_2d.W, model_2d.b_final, titles=plotting.probability_titles(probs_2d))
plt.show()

# %% [markdown]
# ## 6. The sparsity phase change
#
# **Why.** How much a model superposes depends on sparsity, and the change is abrupt: a
# feature goes from not represented to fully represented over a narrow range of sparsity
# (the paper's phase diagrams). We measure two things per feature, as the paper's plots
# of $\lVert W_i \rVert$ do: its norm (is it represented at all?) and how much other
# features share its direction, $\sum_{j \ne i} (\hat W_i \cdot W_j)^2$ with
# $\hat W_i = W_i / \lVert W_i \rVert$ (0 means the feature has a direction of its own).
#
# **Exercise.** Compute both for every instance. A feature with a zero column has no
# direction: give it 0 interference, not NaN (clamp the norm before dividing).

# %%
def norms_and_interference(W: Tensor) -> tuple[Tensor, Tensor]:
    """W: [n_inst, d_hidden, n_features]. Returns (norms, interference), each
    [n_inst, n_features]: ||W_i|| and sum over j != i of (W_hat_i . W_j)^2."""
    # Hint: all dot products at once with an einsum "inst hid i, inst hid j -> inst i j";
    # mask out the diagonal with torch.eye.
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
# **Expect:**
# - dense ($1/(1-S) = 1$): no superposition; since all features are equally important,
#   any `d_hidden`-dimensional subspace is as good as another, so the norms spread out
#   between 0 and 1 (their squares add up to roughly `d_hidden`) instead of picking whole
#   features;
# - as sparsity grows, the norms split into two groups, about 0 (dropped) and about 1
#   (represented), and the number represented climbs in steps well past `d_hidden`,
#   until every feature is in.

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
for p, n, i in zip(probs_sw.tolist(), norms_sw, interference_sw, strict=True):
    represented = n > 0.5
    print(f"1-S = {p:.3f}: {int(represented.sum()):3d} features represented, "
          f"mean interference {i[represented].mean().item() if represented.any() else 0:.2f}")

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
# overlap) how many features share its direction, itself included. A feature alone in its dimension has $D_i = 1$, each
# member of an antipodal pair $1/2$, each vertex of a pentagon in a plane $2/5$, a
# tetrahedron in 3-D $3/4$, a triangle $2/3$; a missing feature 0.
#
# **Exercise.** Compute $D_i$ for every instance and feature (0 for a zero column).

# %%
def feature_dimensionality(W: Tensor) -> Tensor:
    """W: [n_inst, d_hidden, n_features] -> D: [n_inst, n_features]."""
    # Hint: same dot products as before, but normalise only the first factor, square them
    # and sum over j (including j = i).
    # EXERCISE feature_dimensionality
    norms = W.norm(dim=1)
    W_hat = W / norms.clamp_min(1e-8).unsqueeze(1)
    overlaps = einops.einsum(W_hat, W, "inst hid i, inst hid j -> inst i j")
    return norms**2 / (overlaps**2).sum(dim=-1).clamp_min(1e-8)
    # END EXERCISE


# %%
checks.toy.test_feature_dimensionality(feature_dimensionality)

# %% [markdown]
# The paper's striking result (section "The Geometry of Superposition"): as sparsity grows the
# dimensionalities do not slide smoothly, they **stick to a few fractions**, each a
# geometric arrangement (the horizontal lines). The black line is the average number of
# dimensions per represented feature, $d_{hidden} / \lVert W \rVert_F^2$: it steps down
# with plateaus, for instance at 1/2 where features pair up antipodally.
# **Expect** (at the small `ci` size the picture is noisier than the paper's): scattered
# values for dense features (the spread-out norms from before), then tight clusters, e.g.
# at 1/2 (antipodal pairs) and 2/5, with few points in between; the sparsest models crowd
# all features in at about `d_hidden / n_features` each.

# %%
plotting.plot_feature_dimensionality(model_sw.W, probs_sw)
plt.show()
dims_2d = tm.feature_dimensionality(model_2d.W.detach())
print("5 features in 2-D, sparsest instance: D =", [round(d, 2) for d in dims_2d[-1].tolist()],
      "(a pentagon gives 0.4 each)")

# %% [markdown]
# ## 8. Correlated and anticorrelated features
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

# %%
def generate_anticorrelated_batch(n_batch: int, feature_probability: Tensor, generator: torch.Generator) -> Tensor:
    """feature_probability: [n_inst, n_pairs], entries <= 0.5.
    Returns [n_batch, n_inst, 2 * n_pairs], features 2k and 2k+1 forming pair k."""
    # Hint: build the two masks of a pair, torch.stack them on a new last dimension and
    # flatten the last two dimensions, so the pair's features end up next to each other.
    # EXERCISE generate_anticorrelated_batch
    n_inst, n_pairs = feature_probability.shape
    values = torch.rand((n_batch, n_inst, 2 * n_pairs), generator=generator)
    pair_active = torch.rand((n_batch, n_inst, n_pairs), generator=generator) < 2 * feature_probability
    first = torch.rand((n_batch, n_inst, n_pairs), generator=generator) < 0.5
    mask = torch.stack([pair_active & first, pair_active & ~first], dim=-1).flatten(-2)
    return values * mask
    # END EXERCISE


# %%
checks.toy.test_generate_anticorrelated_batch(generate_anticorrelated_batch)

# %% [markdown]
# Now train 2-D models on 2 pairs (4 features) with the reference generators
# `tm.generate_correlated_batch` and `tm.generate_anticorrelated_batch`: one batched model
# whose first 4 instances (4 random starts) see correlated pairs, 1-S = 0.05, and whose last
# 4 see anticorrelated pairs, 1-S = 0.25. Colours mark the pairs (pair 0 blue, pair 1 red).
# **Expect:**
# - correlated: the two features of a pair at right angles (cosine about 0);
# - anticorrelated: the lowest-loss arrangement puts each pair on one line through the
#   origin (cosine -1), where it interferes with nothing. Some starts get stuck in a local
#   minimum instead, where each feature is antipodal to a feature of the *other* pair; they
#   pay interference when the two pairs are active together, so their loss is higher.
#   (With denser correlated features, e.g. 1-S = 0.25, a correlated pair can even collapse
#   onto one shared direction: try it.)

# %%
n_steps_corr = settings.scale(ci=1500, laptop=4000, gpu=8000)
corr_p = torch.full((4, 2), 0.05, device=device)
anti_p = torch.full((4, 2), 0.25, device=device)


def correlated_then_anticorrelated(n_batch: int, generator: torch.Generator) -> Tensor:
    """Instances 0-3: correlated pairs; instances 4-7: anticorrelated pairs."""
    return torch.cat([tm.generate_correlated_batch(n_batch, corr_p, generator),
                      tm.generate_anticorrelated_batch(n_batch, anti_p, generator)], dim=1)


corr_model = tm.ToyModel(n_features=4, d_hidden=2, n_inst=8, seed=settings.seed, device=device)
tm.train_toy_model(corr_model, n_steps_corr, batch_size=1024, lr=1e-2, seed=settings.seed,
                   batch_fn=correlated_then_anticorrelated)
plotting.plot_features_in_2d(
    corr_model.W, colors=["tab:blue", "tab:blue", "tab:red", "tab:red"],
    titles=[f"correlated #{k}" for k in range(4)] + [f"anticorrelated #{k}" for k in range(4)],
)
plt.show()

# %%
with torch.no_grad():
    eval_batch = correlated_then_anticorrelated(20000, torch.Generator(device=device).manual_seed(1))
    eval_loss = corr_model.loss(corr_model(eval_batch), eval_batch)
W_hat = corr_model.W.detach() / corr_model.W.detach().norm(dim=1, keepdim=True).clamp_min(1e-8)
for k in range(8):
    kind = "correlated" if k < 4 else "anticorrelated"
    cos0 = (W_hat[k, :, 0] @ W_hat[k, :, 1]).item()
    cos1 = (W_hat[k, :, 2] @ W_hat[k, :, 3]).item()
    print(f"{kind:>14} #{k % 4}: cosine within pair 0 {cos0:+.2f}, pair 1 {cos1:+.2f}, "
          f"loss {eval_loss[k].item():.4f}")

# %% [markdown]
# ## 9. Neurons: superposition in a privileged basis
#
# **Why.** In the model so far any rotation of the hidden space is as good as any other,
# so the hidden dimensions mean nothing on their own. Real networks apply a nonlinearity
# per neuron, which makes the neuron basis *privileged*: now we can ask what each
# neuron does. The paper's neuron model puts a ReLU on the hidden layer:
#
# $$h = \mathrm{ReLU}(W x), \qquad x' = \mathrm{ReLU}(W^\top h + b).$$
#
# **Exercise.** Write its forward pass.

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
        # Hint: like ToyModel.forward with one more ReLU.
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
# ## 10. Explore
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
# - The transition is sharp (a phase change), and the resulting geometry is discrete:
#   antipodal pairs, triangles, pentagons, tetrahedra, visible as fractions in the feature
#   dimensionality.
# - Correlated features are kept orthogonal; anticorrelated ones can share a line
#   (antipodal) at no cost, though training does not always find that arrangement.
# - With a privileged basis, superposition shows up as polysemantic neurons.
#
# Next, notebook 02 trains sparse autoencoders on exactly these toy models and checks
# whether they recover the true features. Further reading: the paper's sections on
# superposition as compression, the geometry of superposition, and learning dynamics
# ([transformer-circuits.pub/2022/toy_model](https://transformer-circuits.pub/2022/toy_model/index.html)).
