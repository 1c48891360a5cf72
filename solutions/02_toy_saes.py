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
# # 02 · Sparse autoencoders on toy models
#
# In notebook 01 a toy model packed more features than it had dimensions into its hidden
# layer: **superposition**. Looking at a hidden vector, you cannot read off which features
# are active, because no hidden direction belongs to a single feature. A **sparse
# autoencoder** (SAE) tries to undo this: it learns an *overcomplete* dictionary of directions
# (more latents than dimensions) such that each activation vector is a sparse, non-negative
# combination of a few of them. If the model's features are sparse and roughly linear, the
# dictionary's directions should be the features.
#
# On toy data we know the true features, so we can *measure* whether an SAE finds them. This
# notebook builds the SAE architectures that matter today and compares them:
#
# - ReLU + L1 (Bricken et al. 2023, [Towards Monosemanticity](https://transformer-circuits.pub/2023/monosemantic-features);
#   Cunningham et al. 2023, [arXiv 2309.08600](https://arxiv.org/abs/2309.08600));
# - TopK with the AuxK loss (Gao et al. 2024, [arXiv 2406.04093](https://arxiv.org/abs/2406.04093));
# - BatchTopK (Bussmann et al. 2024, [arXiv 2412.06410](https://arxiv.org/abs/2412.06410));
# - JumpReLU and its straight-through estimator (Rajamanoharan et al. 2024, [arXiv 2407.14435](https://arxiv.org/abs/2407.14435));
# - the Gated SAE (Rajamanoharan et al. 2024, [arXiv 2404.16014](https://arxiv.org/abs/2404.16014)).
#
# You will write 11 pieces, in this order, each followed by a check cell: the mean max cosine
# similarity, a whole ReLU SAE (its forward pass and its two loss terms), the decoder-gradient
# projection, the geometric median, the TopK activation, the AuxK loss, BatchTopK, JumpReLU's
# straight-through estimator, the two numbers that read a reconstruction (explained variance
# and shrinkage), a whole Gated SAE (its forward pass and its three-term loss), and the loop
# that trains it: in section 8 you train your own Gated SAE with your own code and score it
# with your own metrics. Every other demonstration uses the course library (`sae_course.sae`,
# `sae_course.training`, `sae_course.evaluation`): the same SAE code trains on GPT-2 in
# notebook 04, so if you are stuck on one exercise you can still run the rest. Hints sit in
# collapsed "Hint" blocks above the exercises; "Predict, then reveal" questions keep their
# answers in collapsed blocks: answer before you open them.

# %% tags=["setup"]
from collections.abc import Callable

import matplotlib.pyplot as plt
import torch
from torch import Tensor
from tqdm.auto import tqdm

from sae_course import checks, plotting, widgets
from sae_course import evaluation as ev
from sae_course import sae as saelib
from sae_course import toy_models as tm
from sae_course.sae import SAE, SAEConfig
from sae_course.settings import get_settings, seed_everything
from sae_course.synthetic import SyntheticFeatures, toy_model_activations, toy_model_features
from sae_course.training import TrainConfig, TrainResult, train_sae

settings = get_settings()
device = settings.device
seed_everything(settings.seed)
print(settings)

# %% [markdown]
# ## 1. Data with known features, and how to score an SAE on it
#
# **Why.** To judge an SAE we need activations whose features we know. We use two sources:
#
# 1. the hidden activations `h = W x` of a toy model from notebook 01 (`sae_course.toy_models`):
#    64 sparse features squeezed into 20 dimensions; its true feature directions are the
#    columns of `W` (at least for the features it chose to represent);
# 2. a synthetic set (`sae_course.synthetic.SyntheticFeatures`): 64 random unit directions in
#    32 dimensions, each token a sparse non-negative combination of them. Here *every* feature
#    is present in the data, so a perfect SAE recovers all 64.
#
# **Expect:** each toy feature is active on 2% of tokens; at this sparsity the toy model
# represents all (or nearly all) of its 64 features in superposition.

# %%
n_features, d_hidden = 64, 20
toy = tm.ToyModel(n_features, d_hidden, n_inst=1, feature_probability=0.02,
                  seed=settings.seed, device=device)
tm.train_toy_model(toy, n_steps=settings.scale(ci=800, laptop=4000, gpu=10000),
                   batch_size=1024, lr=1e-2, seed=settings.seed, progress=True)
toy_features = toy_model_features(toy)  # [n_features, d_hidden]: the columns of W
represented = toy_features.norm(dim=-1) > 0.5
print(f"the toy model represents {int(represented.sum())} of {n_features} features "
      f"in {d_hidden} dimensions")


def toy_batch(step: int, n: int = 1024) -> Tensor:
    """Hidden activations of the toy model; batch `step` is always the same."""
    g = torch.Generator(device=device).manual_seed(10_000 + step)
    return toy_model_activations(toy, n, generator=g)[0]


synthetic = SyntheticFeatures(n_features=64, d=32, feature_probability=0.04,
                              seed=settings.seed, device=device)


def synthetic_batch(step: int, n: int = 512) -> Tensor:
    g = torch.Generator(device=device).manual_seed(20_000 + step)
    return synthetic.sample(n, g)[0]


def fit(sae: SAE, data, **train_options) -> TrainResult:
    """Train with the library's loop; toy-sized SAEs run fastest on one CPU thread."""
    options = {"progress": True, **train_options}
    return train_sae(sae, data, TrainConfig(threads=1, **options))


x_eval = synthetic.sample(8192, torch.Generator(device=device).manual_seed(7))[0]
h_eval = toy_batch(-1, 8192)
print("synthetic activations", tuple(x_eval.shape), "toy activations", tuple(h_eval.shape))

# %% [markdown]
# ### Scoring recovery: mean max cosine similarity
#
# **Why.** With ground truth, the natural score is the **mean max cosine similarity** (MMCS):
# for each *true feature*, the best cosine similarity with any decoder row (any latent's
# direction), averaged over the features. It asks "is every feature somewhere in the
# dictionary?"; extra latents are not penalised (dead and duplicate latents show up in other
# metrics). A feature counts as **recovered** when its best cosine exceeds 0.9. Every section
# below reports both.
#
# **Exercise.** Expect 1 for a dictionary that contains every feature (at any scale).
#
# <details><summary>Hint</summary>
#
# Normalise the rows of both matrices (`t / t.norm(dim=-1, keepdim=True)`); then one matmul
# `[n_features, d] @ [d, d_sae]` gives every cosine, and you want the best latent for each
# feature (a max over the latents' axis).
# </details>

# %%
def mean_max_cosine_similarity(true_features: Tensor, W_dec: Tensor) -> Tensor:
    """true_features [n_features, d], W_dec [d_sae, d] -> the mean over features of the
    largest cosine similarity with any decoder row (a scalar)."""
    # EXERCISE mean_max_cosine_similarity
    t = true_features / true_features.norm(dim=-1, keepdim=True)
    w = W_dec / W_dec.norm(dim=-1, keepdim=True)
    return (t @ w.t()).max(dim=-1).values.mean()
    # END EXERCISE


# %%
checks.toy_sae.test_mean_max_cosine_similarity(mean_max_cosine_similarity)

# %% [markdown]
# ## 2. The ReLU SAE
#
# **Why.** The SAE of Bricken et al. (2023) is one hidden layer with untied weights:
#
# $$f(x) = \mathrm{ReLU}\big((x - b_{dec}) W_{enc} + b_{enc}\big), \qquad \hat x = f(x) W_{dec} + b_{dec}$$
#
# with `W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]` (the same names and shapes as SAELens
# files, so GPT-2 SAEs load later). Subtracting `b_dec` first centres the input: `b_dec` is
# the point the dictionary is built around. Row `i` of `W_dec` is latent `i`'s direction.
# (Cunningham et al. 2023 used a *tied* version, $\hat x = f(x) W_{enc}^\top$ with
# $f(x) = \mathrm{ReLU}(x W_{enc} + b)$ and no `b_dec`; SAEs today untie the two matrices.)
#
# ### The sparsity penalty, and a trap
#
# **Why.** The loss has two terms. The **reconstruction** error $\lVert x - \hat x\rVert^2$
# alone would use every latent a little, so a **sparsity penalty** $\lambda \sum_i |f_i|$ (L1)
# pushes most latents to exactly zero. The trap: the SAE can cheat by making the latents tiny
# and the decoder rows huge, which leaves the reconstruction unchanged and the L1 near zero.
# Two fixes exist:
#
# - **unit-norm decoder**: keep every row of `W_dec` at norm 1 (renormalise after each step,
#   and remove the part of the gradient that would only change the norm; next section);
# - **weighted L1**: penalise $\lambda \sum_i |f_i| \, \lVert W_{dec,i} \rVert$, which does
#   not change when a latent is scaled down and its row up by the same factor.
#
# The course's default is the weighted L1 (Anthropic's April 2024 update; SAELens'
# `scale_sparsity_penalty_by_decoder_norm`): it needs nothing outside the optimiser step, so one
# training loop serves every architecture. The unit-norm variant is in the library too
# (`SAEConfig(l1_variant="unit_norm")`).
#
# **Exercise: the whole ReLU SAE.** Write its forward pass (the encoder, then the decoder) and
# its two loss terms. Each term is a mean over tokens of a sum: over the input's dimensions for
# `"mse"`, over the latents for `"l1"` (times `sparsity_coefficient`, and weighted by the decoder
# row norms only when `weighted` is true). Expect the check's tick line: it compares the
# latents, the reconstruction, both terms and their gradients with the library's SAE.
#
# <details><summary>Hint</summary>
#
# The encoder is one matmul with the ReLU last. Do not change `x` in place (`x -= b_dec` would
# change the caller's tensor): write `x - b_dec`. `W_dec.norm(dim=-1)` gives one norm per
# decoder row (per latent); it broadcasts against `latents [n, d_sae]`. The latents are already
# non-negative after the ReLU, so their L1 is their sum.
# </details>

# %%
def relu_sae_forward(x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor,
                     sparsity_coefficient: float,
                     weighted: bool) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """x [n, d_in] -> (latents [n, d_sae], x_hat [n, d_in], {"mse": ..., "l1": ...}):
    latents = ReLU((x - b_dec) @ W_enc + b_enc), x_hat = latents @ W_dec + b_dec."""
    # EXERCISE relu_sae_forward
    latents = torch.relu((x - b_dec) @ W_enc + b_enc)
    x_hat = latents @ W_dec + b_dec
    per_latent = latents * W_dec.norm(dim=-1) if weighted else latents
    losses = {"mse": (x_hat - x).pow(2).sum(-1).mean(),
              "l1": sparsity_coefficient * per_latent.sum(-1).mean()}
    return latents, x_hat, losses
    # END EXERCISE


# %%
checks.toy_sae.test_relu_sae_forward(relu_sae_forward)

# %% [markdown]
# ### Keeping decoder rows at unit norm
#
# **Why.** With the unit-norm variant, a gradient step moves each row off the unit sphere and
# the renormalisation pulls it back. The part of the gradient *parallel* to the row only
# changes its length, which the renormalisation undoes anyway, and with Adam it also distorts
# the step sizes of the useful part. So before the step we remove it:
# $g_i \leftarrow g_i - (g_i \cdot \hat w_i)\,\hat w_i$ with $\hat w_i = w_i / \lVert w_i \rVert$.
#
# **Exercise.** Do not assume the rows are already unit norm, and return a new tensor (leave
# `grad` as it was). Expect the result to be orthogonal to every row.
#
# <details><summary>Hint</summary>
#
# Normalise the rows of `W_dec` first; `keepdim=True` keeps the shapes broadcastable:
# `(grad * unit).sum(-1, keepdim=True)` is one number per row.
# </details>

# %%
def remove_parallel_grad(W_dec: Tensor, grad: Tensor) -> Tensor:
    """grad [d_sae, d_in] minus, for each row i, its component along W_dec[i]."""
    # EXERCISE remove_parallel_grad
    unit = W_dec / W_dec.norm(dim=-1, keepdim=True)
    return grad - (grad * unit).sum(-1, keepdim=True) * unit
    # END EXERCISE


# %%
checks.toy_sae.test_remove_parallel_grad(remove_parallel_grad)

# %% [markdown]
# ### Where does b_dec start? The geometric median
#
# **Why.** `b_dec` should start at the "centre" of the data. The mean is the obvious choice,
# but Bricken et al. use the **geometric median**, the point minimising the *sum of distances*
# (not squared distances) to the data, which outliers cannot drag around. It has no closed
# form; Weiszfeld's algorithm finds it: start at the mean and repeat
# $m \leftarrow \sum_j w_j x_j / \sum_j w_j$ with $w_j = 1 / \lVert x_j - m \rVert$.
#
# **Exercise.** Start at the mean and run exactly `n_iter` iterations (`n_iter = 0` returns the
# mean). When `m` lands on a data point its distance is 0: clamp distances at `1e-8` before
# dividing.
#
# <details><summary>Hint</summary>
#
# `(points - m).norm(dim=-1)` gives the n distances; `w[:, None] * points` weights the rows.
# </details>

# %%
def geometric_median(points: Tensor, n_iter: int) -> Tensor:
    """Weiszfeld's algorithm on points [n, d], starting from the mean: returns [d]."""
    # EXERCISE geometric_median
    m = points.mean(0)
    for _ in range(n_iter):
        w = 1.0 / (points - m).norm(dim=-1).clamp_min(1e-8)
        m = (w[:, None] * points).sum(0) / w.sum()
    return m
    # END EXERCISE


# %%
checks.toy_sae.test_geometric_median(geometric_median)

# %% [markdown]
# ### Training a ReLU SAE on the toy model
#
# **Why.** Now the reference SAE (`sae_course.sae.SAE`) and training loop
# (`sae_course.training.train_sae`: Adam, learning-rate warmup/decay, L1 warmup, dead-latent
# tracking, checkpoints) on the toy model's hidden activations. `b_dec` starts at the geometric
# median of the first batch. Every SAE here starts from random directions: its initialisation
# and the data's features come from separate random streams, so an untrained decoder recovers
# none of the features and whatever is recovered was learned.
#
# We train a ReLU + L1 SAE and a TopK SAE (k = 4, next section), both with 128 latents (twice
# the number of features).
#
# **Expect:** TopK recovers (nearly) every represented feature (best cosine above 0.9):
# 63 of 64 on the `ci` budget. ReLU + L1 needs longer: after `ci`'s 600 steps it has about two
# thirds of them (43 of 64), because 64 features in only 20 dimensions interfere a lot and the
# L1 penalty both shrinks the latents and lets several latents share a feature; `laptop`'s
# 3000 steps recover all 64 with both SAEs. The TopK SAE ends with dead latents (about a fifth
# of them on `ci`; on `laptop` both SAEs end with about a quarter dead): with twice as many
# latents as features, the surplus has nothing left to represent. Features the toy model did
# not represent (if any) cannot be recovered by any SAE.

# %%
toy_steps = settings.scale(ci=600, laptop=3000, gpu=10000)
relu_toy = SAE(SAEConfig(d_in=d_hidden, d_sae=128, architecture="relu",
                         sparsity_coefficient=0.5, dead_after_tokens=20_000),
               device=device, seed=settings.seed)
fit(relu_toy, toy_batch, n_steps=toy_steps, lr=3e-3, sparsity_warmup_steps=50,
    lr_decay_steps=toy_steps // 5)
topk_toy = SAE(SAEConfig(d_in=d_hidden, d_sae=128, architecture="topk", k=4,
                         dead_after_tokens=20_000), device=device, seed=settings.seed)
fit(topk_toy, toy_batch, n_steps=toy_steps, lr=3e-3, lr_decay_steps=toy_steps // 5)

for name, sae_ in (("ReLU + L1", relu_toy), ("TopK", topk_toy)):
    m = ev.evaluate_sae(sae_, h_eval, toy_features[represented])
    print(f"{name:10s} recovered {m['recovered']}/{m['n_features']} represented features, "
          f"MMCS {m['mmcs']:.3f}, L0 {m['l0']:.2f}, explained variance "
          f"{m['explained_variance']:.3f}, dead {m['dead_fraction']:.1%}")
plotting.plot_best_cosines(toy_features, {"ReLU + L1": relu_toy.W_dec, "TopK": topk_toy.W_dec},
                           n_represented=int(represented.sum()))
plt.show()

# %% [markdown]
# ## 3. TopK SAEs
#
# **Why.** The L1 penalty has two flaws: it shrinks every active latent toward zero
# (*shrinkage*, measured in section 7), and its coefficient controls sparsity only indirectly.
# Gao et al. (2024) replace ReLU + L1 with **TopK**: keep the `k` largest pre-activations of
# each token, zero the rest. Sparsity is now exactly `k` (at most), no penalty is needed, and
# the loss is just the reconstruction error.
#
# **Exercise.** The TopK activation. Keep a ReLU on the kept values (a negative value among the
# top k still becomes 0, as in the paper). Keep *exactly* `k` per token even when values tie,
# and keep the input's dtype. Expect at most `k` non-zeros per token.
#
# <details><summary>Hint</summary>
#
# `pre.topk(k, dim=-1)` gives values and indices; `torch.zeros_like(pre).scatter(-1, indices,
# ...)` puts the kept values back. A threshold such as `pre >= kth_largest` keeps every tied
# value, which can be more than `k`.
# </details>

# %%
def topk_activation(pre: Tensor, k: int) -> Tensor:
    """Latents [n, d_sae]: for each token the k largest pre-activations, ReLU'd; others 0."""
    # EXERCISE topk_activation
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
    # END EXERCISE


# %%
checks.toy_sae.test_topk_activation(topk_activation)

# %% [markdown]
# ### Dead latents and the AuxK loss
#
# **Why.** A latent that never makes the top k gets no gradient, so it never gets a chance to
# improve: it is **dead**. The course's definition: *a latent is dead when it has not fired on
# any of the last N tokens*, N a setting (`SAEConfig.dead_after_tokens`; Gao et al. use 10M
# tokens on language models). Gao et al.'s fix is an auxiliary loss: the `k_aux` largest
# **dead** latents (256 by default, capped at the number of dead ones) try to reconstruct the
# residual error $e = x - \hat x$, so dead latents get gradient toward directions the live ones
# miss. The residual is a target, so it is detached: AuxK must not change the main
# reconstruction.
#
# Gao et al. add it with coefficient 1/32 to a *normalised* error: the squared error divided by
# the variance of its target, $\mathcal{L}_{aux} = E\lVert e - \hat e\rVert^2 / E\lVert e -
# E[e]\rVert^2$, a fraction (1 means no better than predicting the residual's mean). The library
# does the same for the AuxK term (its main term stays the plain squared error; Gao et al.
# normalise that too). SAEs trained with the course library before this change used the
# unnormalised AuxK error, so their AuxK term was weighted differently.
#
# **Exercise.** Return 0 when nothing is dead. When the residual has no variance to divide by
# (a single token), return the unnormalised error. Expect a scalar.
#
# <details><summary>Hint</summary>
#
# `pre.masked_fill(~dead_mask, float("-inf"))` hides the live latents; then reuse the TopK
# idea with `k = min(k_aux, number of dead)`. The denominator is
# `(r - r.mean(0)).pow(2).sum(-1).mean()` for the detached residual `r`.
# </details>

# %%
def auxk_loss(residual: Tensor, pre: Tensor, W_dec: Tensor, dead_mask: Tensor,
              k_aux: int) -> Tensor:
    """E||r - aux_latents @ W_dec||^2 / E||r - E[r]||^2 for the detached residual r, where
    aux_latents keeps the min(k_aux, n_dead) largest pre-activations among dead latents
    (ReLU'd); squared norms over d_in, expectations over tokens."""
    # EXERCISE auxk_loss
    k = min(k_aux, int(dead_mask.sum()))
    if k == 0:
        return pre.new_zeros(())
    masked = pre.masked_fill(~dead_mask, float("-inf"))
    values, indices = masked.topk(k, dim=-1)
    aux_latents = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
    r = residual.detach()
    error = (r - aux_latents @ W_dec).pow(2).sum(-1).mean()
    variance = (r - r.mean(0)).pow(2).sum(-1).mean()
    return error / variance if variance > 0 else error
    # END EXERCISE


# %%
checks.toy_sae.test_auxk_loss(auxk_loss)

# %% [markdown]
# ## 4. BatchTopK
#
# **Why.** TopK gives every token exactly `k` latents, but some tokens are simple and some
# complex. **BatchTopK** (Bussmann et al. 2024) keeps the `batch_size * k` largest
# pre-activations over the *whole batch*: the average is still `k` per token, but a complex
# token can take more. The catch: a token's code then depends on the rest of its batch. At
# inference the SAE uses a fixed threshold instead, a running estimate of the smallest
# activation that BatchTopK kept during training (so it becomes a JumpReLU with one shared
# threshold; `sae.eval()` switches to it in the library).
#
# **Exercise.** Keep exactly `batch_size * k` values even when some tie. Expect the number of
# non-zeros to vary by token but average at most `k`.
#
# <details><summary>Hint</summary>
#
# Flatten, `topk`, `scatter` into a flat zero tensor, reshape back.
# </details>

# %%
def batchtopk_activation(pre: Tensor, k: int) -> Tensor:
    """Latents [n, d_sae]: the n * k largest pre-activations over the batch, ReLU'd."""
    # EXERCISE batchtopk_activation
    flat = pre.reshape(-1)
    values, indices = flat.topk(k * pre.shape[0])
    return torch.zeros_like(flat).scatter(0, indices, torch.relu(values)).reshape(pre.shape)
    # END EXERCISE


# %%
checks.toy_sae.test_batchtopk_activation(batchtopk_activation)

# %% [markdown]
# The library's BatchTopK SAE learns its threshold while training; in `eval()` mode it uses it.
#
# **Predict, then reveal.** Trained with k = 4, will this SAE use about 4 latents per token at
# inference, with the threshold instead of the batch's top k?
#
# <details><summary>Reveal</summary>
#
# Not exactly. On `ci` the cell prints an L0 of about 3.1, a quarter below k, and it varies
# from 0 to about 20 latents per token. The threshold is a running average (momentum 0.01) of
# each training batch's smallest kept activation, so after a short run it still carries the
# larger values of early batches and keeps too few; and one threshold for every token cannot
# give each token exactly k. After `laptop`'s 2000 steps the average is close to k (about
# 4.1), but single tokens still range from 0 to about 20 latents.
# </details>

# %%
btk = SAE(SAEConfig(d_in=32, d_sae=128, architecture="batchtopk", k=4), device=device,
          seed=settings.seed)
fit(btk, synthetic_batch, n_steps=settings.scale(ci=300, laptop=2000, gpu=5000), lr=3e-3)
with torch.no_grad():
    lat = btk.encode(x_eval)  # eval mode after training: the threshold
per_token = (lat != 0).sum(-1).float()
m = ev.evaluate_sae(btk, x_eval, synthetic.features)
print(f"learned threshold {float(btk.threshold):.3f}; L0 at inference {per_token.mean():.2f} "
      f"(min {per_token.min():.0f}, max {per_token.max():.0f} per token); recovered "
      f"{m['recovered']}/64, MMCS {m['mmcs']:.3f}")

# %% [markdown]
# ## 5. JumpReLU and the straight-through estimator
#
# **Why.** JumpReLU (Rajamanoharan et al. 2024) zeroes a latent unless its pre-activation
# clears a learned per-latent threshold $\theta$: $\mathrm{JumpReLU}(z) = z\,H(z - \theta)$ with
# $H$ the Heaviside step. It penalises **L0** directly, $\lambda \sum_i H(z_i - \theta_i)$,
# instead of L1: a latent that fires pays the same whatever its size, so nothing pulls the
# sizes down. The problem: $H$ is flat almost everywhere, so $\theta$ gets **no gradient** at
# all. Look:

# %%
z = torch.tensor([0.3, 0.85, 1.05, 2.0], requires_grad=True)
theta = torch.tensor(1.0, requires_grad=True)
out = z * (z > theta).float()  # JumpReLU written directly: the comparison has no gradient
out.sum().backward()
print("gradient reaching z:    ", z.grad.tolist())
print("gradient reaching theta:", theta.grad)  # None: theta cannot learn

# %% [markdown]
# The paper's fix is a **straight-through estimator** (STE): keep the exact forward pass but,
# in the backward pass, use a *pseudo-derivative* for $\theta$, obtained by smoothing $H$ with
# a rectangle kernel $K(u) = 1$ for $|u| < 1/2$ of width $\varepsilon$ (the `bandwidth`):
#
# $$\frac{\partial}{\partial\theta}\,\mathrm{JumpReLU}(z) := -\frac{\theta}{\varepsilon}\,K\!\left(\frac{z - \theta}{\varepsilon}\right),
# \qquad \frac{\partial}{\partial\theta}\,H(z - \theta) := -\frac{1}{\varepsilon}\,K\!\left(\frac{z - \theta}{\varepsilon}\right).$$
#
# Only tokens whose pre-activation lies within $\varepsilon/2$ of the threshold tell $\theta$
# which way to move. The gradient to $z$ is the ordinary one, $H(z - \theta)$.
#
# **Exercise.** Write JumpReLU as a `torch.autograd.Function`. The threshold has shape
# `[d_sae]` and the input `[n, d_sae]`, so sum the threshold's gradient over tokens.
# (The library's `sae_course.sae.StepFunction` is the same idea for the L0 term.)
#
# <details><summary>Hint</summary>
#
# In `forward`, `ctx.save_for_backward(z, threshold)` and keep the bandwidth on `ctx`; in
# `backward`, the window is `(z - threshold).abs() < bandwidth / 2`, and every gradient is
# multiplied by `grad_out`. Return `None` for the bandwidth.
# </details>

# %%
class JumpReLUFunction(torch.autograd.Function):
    """Forward z * H(z - threshold); backward with the rectangle-kernel STE for threshold.

    Write two static methods:
      forward(ctx, z [n, d_sae], threshold [d_sae], bandwidth: float) -> [n, d_sae]
      backward(ctx, grad_out [n, d_sae]) -> (grad_z, grad_threshold [d_sae], None)
    """

    # EXERCISE JumpReLUFunction
    @staticmethod
    def forward(ctx, z: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return z * (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        z, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        in_window = ((z - threshold).abs() < bw / 2).to(z.dtype)
        grad_z = grad_out * (z > threshold).to(z.dtype)
        grad_threshold = (-(threshold / bw) * in_window * grad_out).sum(0)
        return grad_z, grad_threshold, None
    # END EXERCISE


# %%
checks.toy_sae.test_jumprelu_function(JumpReLUFunction)

# %% [markdown]
# With the STE the same example gives the threshold a gradient (library version). The window
# is $|z - \theta| < \varepsilon/2 = 0.1$ around $\theta = 1$: z = 1.05 lies inside it,
# z = 0.85 well outside.
#
# **Predict, then reveal.** With $\varepsilon = 0.2$, what gradient reaches $\theta$ from
# `out.sum() + l0.sum()` (the JumpReLU output plus its L0 count)?
#
# <details><summary>Reveal</summary>
#
# Only z = 1.05 counts. The JumpReLU term gives $-\theta/\varepsilon = -5$ and the L0 term
# $-1/\varepsilon = -5$: **-10** in all. Raising the threshold would switch this latent off,
# which lowers both the output and the L0 count, hence the negative sign.
# </details>

# %%
theta = torch.tensor([1.0], requires_grad=True)
bandwidth = 0.2
z = torch.tensor([[0.3, 0.85, 1.05, 2.0]])
out = saelib.JumpReLUFunction.apply(z, theta, bandwidth)
l0 = saelib.StepFunction.apply(z, theta, bandwidth)
(out.sum() + l0.sum()).backward()
print("gradient reaching theta with the STE:", theta.grad.tolist(),
      "(only z = 1.05 lies in the window)")

# %% [markdown]
# ## 6. The L0-vs-reconstruction frontier
#
# **Why.** Every SAE trades sparsity (L0, the mean number of active latents per token) for
# reconstruction (explained variance, $1 - E\lVert x - \hat x\rVert^2 / E\lVert x - E[x]\rVert^2$).
# An architecture is better when its curve lies further up and left: more variance explained at
# the same L0. We train each architecture at a few sparsity settings on the synthetic set
# (library implementations) and plot them side by side; the right panel shows MMCS.
#
# **Expect:** TopK, BatchTopK and JumpReLU above ReLU + L1 at low L0. Recovery needs training
# time and the right sparsity: on the `ci` budget (250 steps per run) the curves are rough and
# only the sparsest TopK and BatchTopK runs recover most features (TopK k = 2: 64 of 64,
# BatchTopK k = 2: 54); ReLU + L1 and JumpReLU recover fewer than 10 at every setting there.
# `laptop` trains each SAE 2000 steps and sweeps more settings, so its curves are smoother and
# recover more: near the true L0 every architecture recovers 60 or more of the 64. The dotted
# line is the data's true L0 (2.56: about 2.6 features per token).

# %%
frontier_steps = settings.scale(ci=250, laptop=2000, gpu=5000)
sweeps = {
    "ReLU + L1": ("relu", "sparsity_coefficient", settings.scale(
        ci=[0.1, 0.4, 1.5], laptop=[0.05, 0.1, 0.2, 0.4, 0.8, 1.5],
        gpu=[0.05, 0.1, 0.2, 0.4, 0.8, 1.5])),
    "TopK": ("topk", "k", settings.scale(ci=[2, 4, 8], laptop=[1, 2, 3, 4, 6, 8],
                                         gpu=[1, 2, 3, 4, 6, 8])),
    "BatchTopK": ("batchtopk", "k", settings.scale(ci=[2, 4, 8], laptop=[1, 2, 3, 4, 6, 8],
                                                   gpu=[1, 2, 3, 4, 6, 8])),
    "JumpReLU": ("jumprelu", "sparsity_coefficient", settings.scale(
        ci=[0.003, 0.01, 0.05], laptop=[0.001, 0.003, 0.01, 0.03, 0.1],
        gpu=[0.001, 0.003, 0.01, 0.03, 0.1])),
}


def sweep(arch: str, knob: str, values: list, bar) -> list[dict]:
    """Train one SAE per value of `knob` on the synthetic set; their evaluation dicts."""
    points = []
    for value in values:
        cfg = SAEConfig(d_in=32, d_sae=128, architecture=arch, **{knob: value},
                        jumprelu_init_threshold=0.05, jumprelu_bandwidth=0.05,
                        dead_after_tokens=10_000)
        sae_ = SAE(cfg, device=device, seed=settings.seed)
        fit(sae_, synthetic_batch, n_steps=frontier_steps, lr=3e-3, progress=False,
            sparsity_warmup_steps=frontier_steps // 10, lr_decay_steps=frontier_steps // 5)
        points.append(ev.evaluate_sae(sae_, x_eval, synthetic.features))
        bar.update(1)
    return points


def show(label: str, points: list[dict]) -> None:
    print(f"{label:10s}", "  ".join(f"L0 {p['l0']:.2f} EV {p['explained_variance']:.2f} "
                                    f"rec {p['recovered']}" for p in points))


frontier = {}
with tqdm(total=sum(len(v) for *_, v in sweeps.values()), desc="frontier SAEs") as bar:
    for label, (arch, knob, values) in sweeps.items():
        frontier[label] = sweep(arch, knob, values, bar)
for label, points in frontier.items():
    show(label, points)

true_l0 = float((synthetic.sample(8192, torch.Generator(device=device).manual_seed(1))[1] > 0)
                .sum(-1).float().mean())
print(f"the data's true L0: {true_l0:.2f}")
plotting.plot_frontier(frontier, true_l0=true_l0, n_features=synthetic.features.shape[0])
plt.show()

# %% [markdown]
# ## 7. Reading the frontier: shrinkage, and the right L0
#
# ### Shrinkage
#
# **Why.** Look at the sparsest ReLU + L1 runs. On `laptop` the one at L0 1.9 recovers all 64
# features yet explains only 62% of the variance, where TopK at about the same L0 explains 83%;
# the one at L0 0.75 still recovers 49 and explains 14%. (`ci`'s 250-step runs have not found
# the features yet, but the sparsest explains just 1%.) The directions are right but the
# latents are too small: the L1 penalty charges every unit of activation, so the SAE pays less
# by under-reporting each feature's size. Rajamanoharan et al. (2024, Gated SAEs) measure
# this with the **relative reconstruction bias**
#
# $$\gamma = \frac{E\lVert \hat x\rVert^2}{E\langle x, \hat x\rangle},$$
#
# the $\gamma$ for which $\hat x / \gamma$ is closest to $x$ (set the derivative of
# $E\lVert \hat x/\gamma - x\rVert^2$ to zero). It is 1 without shrinkage and below 1 when the
# reconstructions come out too short ($\hat x = 0.8\,x$ gives 0.8).
#
# Together with the explained variance of section 6 it reads a reconstruction in two numbers:
# how much of the data it explains, and whether it comes out too short.
#
# **Exercise: `reconstruction_stats`.** Return both, `{"explained_variance": ..., "shrinkage":
# ...}`, each a 0-dimensional tensor of the input's dtype. Take every expectation over all tokens
# (rows) at once: ratios of means, not means of per-token ratios. The variance is the data's
# spread around *its mean* $E[x]$ (one mean per dimension). Accept inputs `[..., d]`: every
# dimension but the last is tokens. Expect the check's tick line: $\hat x = 0.8\,x$ gives
# $\gamma = 0.8$ and an explained variance below 1.
#
# <details><summary>Hint</summary>
#
# `x.reshape(-1, x.shape[-1])` makes the tokens one axis. `x_hat.pow(2).sum()` and
# `(x * x_hat).sum()` are the two sums of $\gamma$ (the number of tokens cancels); the variance
# is `(x - x.mean(0)).pow(2).sum(-1).mean()` on the flattened `x`.
# </details>

# %%
def reconstruction_stats(x: Tensor, x_hat: Tensor) -> dict[str, Tensor]:
    """The explained variance 1 - E||x - x_hat||^2 / E||x - E[x]||^2 and the relative
    reconstruction bias gamma = E||x_hat||^2 / E<x, x_hat>, over the rows of [..., d] inputs."""
    # EXERCISE reconstruction_stats
    x, x_hat = x.reshape(-1, x.shape[-1]), x_hat.reshape(-1, x_hat.shape[-1])
    error = (x - x_hat).pow(2).sum(-1).mean()
    variance = (x - x.mean(0)).pow(2).sum(-1).mean()
    return {"explained_variance": 1 - error / variance,
            "shrinkage": x_hat.pow(2).sum() / (x * x_hat).sum()}
    # END EXERCISE


# %%
checks.toy_sae.test_reconstruction_stats(reconstruction_stats)

# %% [markdown]
# **Predict, then reveal.** Which of the four architectures will show $\gamma$ clearly below 1,
# and for which of its settings?
#
# <details><summary>Reveal</summary>
#
# ReLU + L1, and only it. On `ci` its gamma is 0.64 to 0.89 at every setting; on `laptop` it
# runs from 0.96 at the weakest penalty (L0 about 20) down to 0.40 at the strongest. TopK,
# BatchTopK and JumpReLU stay between 0.96 and 1.01 on `ci` and at 1.00 on `laptop`. TopK
# and BatchTopK have no penalty at all, and JumpReLU's L0 penalty counts firing latents
# without weighing their size, so nothing in their losses pulls a firing latent's size down.
# Shrinkage is why a ReLU + L1 SAE can point its latents at the right directions and still
# explain little of the variance: the sizes are wrong, not the directions.
# </details>

# %%
for label, points in frontier.items():
    print(f"{label:10s}", "  ".join(f"L0 {p['l0']:5.2f}: gamma {p['shrinkage']:.2f}"
                                    for p in points))

# %% [markdown]
# ### Past the true L0, more latents buy variance, not features
#
# **Predict, then reveal.** The data's true L0 (printed above) is the number of features
# active per token. What happens to recovery when an SAE is allowed many more latents per
# token than that?
#
# <details><summary>Reveal</summary>
#
# Recovery falls. On `ci`, TopK recovers 64 features at k = 2 (L0 2.0, next to the true L0),
# 57 at k = 4 and 22 at k = 8, while its explained variance rises from 0.82 to 0.90;
# BatchTopK goes from 54 to 33 to 4. The least-penalised JumpReLU explains 93% of the variance
# and recovers none. `laptop`'s longer runs hold on to the features a little further, then
# lose them the same way: TopK recovers 64 up to k = 4, then 63 at k = 6 and 56 at k = 8;
# BatchTopK 64 at k = 2 and 3, then 61, 43 and 23 at k = 4, 6 and 8; the least-penalised
# JumpReLU explains all the variance (1.00) and recovers none. With more latents per token
# than there are active features, the SAE can reconstruct just as well with latents that mix
# features or split one feature over several latents, and the reconstruction loss has no
# reason to prefer the true features.
# </details>
#
# This is why explained variance alone cannot tell you whether an SAE found the features, and
# why the L0 of a language-model SAE is a choice that matters (Chanin et al. 2025, *Sparse but
# Wrong*): with the truth unknown, the frontier alone does not say where the right L0 is.

# %% [markdown]
# ## 8. A fix for shrinkage: the Gated SAE
#
# **Why.** In a ReLU SAE one number, the pre-activation, does two jobs: whether a latent fires
# and how large it is. The L1 penalty meant for the first job shrinks the second. The **Gated
# SAE** (Rajamanoharan et al. 2024, [arXiv 2404.16014](https://arxiv.org/abs/2404.16014))
# splits them. With $x_c = x - b_{dec}$:
#
# - the **gate** decides which latents fire: $\pi_{gate} = x_c W_{enc} + b_{gate}$,
#   $f_{gate} = H(\pi_{gate})$;
# - the **magnitude** path says how much, with the same directions rescaled per latent:
#   $\pi_{mag} = x_c\,(W_{enc} \odot e^{r_{mag}}) + b_{mag}$;
# - the latents are $f = f_{gate} \odot \mathrm{ReLU}(\pi_{mag})$, and $\hat x = f W_{dec} + b_{dec}$.
#
# The loss has three terms: the reconstruction $\lVert x - \hat x\rVert^2$; the L1 of the
# *gate's* ReLU'd pre-activations, $\lambda \sum_i \mathrm{ReLU}(\pi_{gate})_i \lVert W_{dec,i}\rVert$
# (so the penalty never touches the magnitudes); and, because $H$ passes no gradient, an
# auxiliary reconstruction through the gate with a *frozen* copy of the decoder,
# $\lVert x - (\mathrm{ReLU}(\pi_{gate})\,\mathrm{sg}(W_{dec}) + \mathrm{sg}(b_{dec}))\rVert^2$
# (sg: stop gradient, `.detach()`), which teaches the gate without moving the decoder. The
# library's version is `SAEConfig(architecture="gated")`; its files use SAELens 6's names
# (`W_enc`, `b_gate`, `r_mag`, `b_mag`, `W_dec`, `b_dec`).
#
# JumpReLU does the same job another way: its latent is $z\,H(z - \theta)$, the pre-activation
# itself once it clears the threshold, and its penalty counts firing latents (L0) instead of
# summing their sizes, so no term pulls a firing latent's size down.
#
# **Exercise (a whole SAE).** Write a Gated SAE's forward pass and its loss. Each term is a
# mean over tokens of a sum over dimensions (or latents). The check compares everything,
# gradients included, and then *trains* your function: 30 Adam steps from the same start as
# the library's Gated SAE must end at the same weights.
#
# <details><summary>Hint</summary>
#
# `(pi_gate > 0).to(x.dtype)` is the gate; `W_enc * r_mag.exp()` rescales the columns
# (one per latent). For the L1, weight `torch.relu(pi_gate)` by `W_dec.norm(dim=-1)`. The
# auxiliary term uses `W_dec.detach()` and `b_dec.detach()`, and only those: the gate's
# pre-activations must keep their gradient.
# </details>

# %%
def gated_sae_forward(x: Tensor, W_enc: Tensor, b_gate: Tensor, r_mag: Tensor, b_mag: Tensor,
                      W_dec: Tensor, b_dec: Tensor,
                      sparsity_coefficient: float) -> tuple[Tensor, dict[str, Tensor]]:
    """x [n, d_in] -> (x_hat [n, d_in], {"mse": ..., "l1": ..., "aux": ...}) of a Gated SAE."""
    # EXERCISE gated_sae_forward
    x_c = x - b_dec
    pi_gate = x_c @ W_enc + b_gate
    pi_mag = x_c @ (W_enc * r_mag.exp()) + b_mag
    latents = (pi_gate > 0).to(x.dtype) * torch.relu(pi_mag)
    x_hat = latents @ W_dec + b_dec
    gate = torch.relu(pi_gate)
    l1 = sparsity_coefficient * (gate * W_dec.norm(dim=-1)).sum(-1).mean()
    via_gate = gate @ W_dec.detach() + b_dec.detach()
    return x_hat, {"mse": (x_hat - x).pow(2).sum(-1).mean(), "l1": l1,
                   "aux": (via_gate - x).pow(2).sum(-1).mean()}
    # END EXERCISE


# %%
checks.toy_sae.test_gated_sae_forward(gated_sae_forward)

# %% [markdown]
# ### Training your own SAE
#
# **Why.** A forward pass and a loss are half an SAE; the other half is the loop that trains
# it. The library's `train_sae` adds schedules, dead-latent tracking and checkpoints, but its
# core is five lines you can write: take a batch, run the forward pass, add up the loss terms,
# backpropagate, step the optimiser (Adam, Kingma & Ba 2014,
# [arXiv 1412.6980](https://arxiv.org/abs/1412.6980)). You then train *your* Gated SAE with
# *your* loop and score it with *your* `reconstruction_stats` and MMCS.
#
# **Exercise: `train_sae_loop`.** `forward` is any function with the signature of
# `gated_sae_forward`: `forward(x, *params, sparsity_coefficient) -> (x_hat, losses)`. Make one
# Adam optimiser over `params` (leaf tensors with `requires_grad=True`, trained in place), and
# at step `t` train on `batch(t)`, for `t = 0 .. n_steps - 1`, one forward pass per step.
# Return the loss of every step (the sum of the terms) as Python floats. Expect the check's tick
# line: your loop ends at the same weights as the reference loop.
#
# <details><summary>Hint</summary>
#
# `torch.optim.Adam(params, lr=lr)` once, before the loop. In the loop: `optimizer.zero_grad()`
# (otherwise gradients add up across steps), `loss.backward()`, `optimizer.step()`. Keep
# `loss.item()`, not `loss`: a tensor keeps its whole graph alive, and a list of them grows the
# memory with every step.
# </details>

# %%
def train_sae_loop(forward: Callable, params: list[Tensor], batch: Callable[[int], Tensor],
                   n_steps: int, lr: float, sparsity_coefficient: float) -> list[float]:
    """Train `params` in place with Adam(lr): at step t, the loss is the sum of the terms of
    forward(batch(t), *params, sparsity_coefficient). Returns the n_steps losses."""
    # EXERCISE train_sae_loop
    optimizer = torch.optim.Adam(params, lr=lr)
    history = []
    for step in range(n_steps):
        _, losses = forward(batch(step), *params, sparsity_coefficient)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history
    # END EXERCISE


# %%
checks.toy_sae.test_train_sae_loop(train_sae_loop)

# %% [markdown]
# Now all of it together, on the synthetic data of section 1: a Gated SAE with 128 latents
# starts from the library's initialisation (its `W_dec` rows random unit directions, `W_enc`
# their transpose; independent of the data's features), your `gated_sae_forward` and
# `train_sae_loop` train it with a constant learning rate (no warm-up, no decay), and your
# `reconstruction_stats` and `mean_max_cosine_similarity` score it. (This is the one cell that
# runs your code rather than the library's: it needs those four exercises done.)
#
# **Expect:** the loss falling steeply over the first few dozen steps, then slowly. On `ci`
# (250 steps) your SAE reaches an L0 of about 5 with an explained variance of 0.68 and a gamma
# of 0.89, but has found only 5 of the 64 features (MMCS 0.72): the sizes settle before the
# directions do. On `laptop` (2000 steps) it reaches an L0 of about 6.6, an explained variance
# of 0.89, a gamma of 0.99, and 60 of the 64 features (MMCS 0.95). Compare gamma with the
# ReLU + L1 rows printed in section 7: 0.64 to 0.89 on `ci`, and 0.87 at an L0 of 5.1 on
# `laptop`.

# %%
gated_names = ("W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec")
start = SAE(SAEConfig(d_in=32, d_sae=128, architecture="gated"), device=device, seed=settings.seed)
my_params = [getattr(start, name).detach().clone().requires_grad_(True) for name in gated_names]
with tqdm(total=frontier_steps, desc="your Gated SAE") as bar:
    def counted_batch(step: int) -> Tensor:
        bar.update(1)
        return synthetic_batch(step)

    my_history = train_sae_loop(gated_sae_forward, my_params, counted_batch,
                                n_steps=frontier_steps, lr=3e-3, sparsity_coefficient=1.0)
with torch.no_grad():
    my_x_hat, _ = gated_sae_forward(x_eval, *my_params, 1.0)
    my_latents = saelib.gated_forward(x_eval, *my_params, 1.0)[1]
    my_stats = reconstruction_stats(x_eval, my_x_hat)
    my_best = ev.best_cosines(synthetic.features, my_params[4])
print(f"your Gated SAE after {frontier_steps} steps: L0 {ev.l0(my_latents):.2f}, explained "
      f"variance {my_stats['explained_variance']:.2f}, gamma {my_stats['shrinkage']:.2f}, MMCS "
      f"{mean_max_cosine_similarity(synthetic.features, my_params[4]):.3f}, recovered "
      f"{int((my_best > ev.RECOVERED_COSINE).sum())}/64")
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(my_history)
ax.set(xlabel="step", ylabel="loss (mse + l1 + aux)", yscale="log",
       title="Your loop training your Gated SAE")
plt.tight_layout()
plt.show()

# %% [markdown]
# Now the library's Gated SAE on the same synthetic data, steps and schedule as the frontier.
# A gate's L1 coefficient buys a different L0 than a ReLU's, so we sweep it to cover the same
# range of L0, and compare at similar L0.
#
# **Expect:** where ReLU + L1 shrinks, the Gated SAE shrinks less once it has trained long
# enough, and at low L0 it explains more. On `ci` (250 steps per run): near L0 10 to 14,
# gamma 0.88 against ReLU's 0.64; at L0 about 1, an explained variance of 0.24 against 0.01.
# It does not reach gamma = 1 in runs this short, and its sparsest run is still as shrunk as
# ReLU's (0.69 against 0.71): gate and magnitude share `W_enc`, which the L1 pulls down, and
# `r_mag` needs steps to scale the magnitudes back up.
# `laptop`'s 2000 steps get there: gamma 0.95 to 0.97 at every setting, against ReLU's 0.96
# down to 0.40, and near L0 2 an explained variance of 0.90 against 0.62. At high L0 (about
# 10 to 20), where ReLU's penalty is weak, the two are level in gamma and ReLU explains a
# little more. JumpReLU stays at gamma 1.01 on `ci`, 1.00 on `laptop`. The Gated SAE
# recovers few features (at most 9) at `ci`'s 250 steps; on `laptop` it recovers 62 to 64 at
# every L0 below about 6.

# %%
gated_values = settings.scale(ci=[0.5, 1.0, 2.0], laptop=[0.5, 0.8, 1.0, 1.5, 2.0],
                              gpu=[0.5, 0.8, 1.0, 1.5, 2.0])
with tqdm(total=len(gated_values), desc="gated SAEs") as bar:
    frontier["Gated"] = sweep("gated", "sparsity_coefficient", gated_values, bar)
for label in ("ReLU + L1", "Gated", "JumpReLU"):
    print(f"{label:10s}", "  ".join(f"L0 {p['l0']:5.2f}: gamma {p['shrinkage']:.2f} "
                                    f"EV {p['explained_variance']:.2f} rec {p['recovered']}"
                                    for p in frontier[label]))
plotting.plot_frontier(frontier, true_l0=true_l0, n_features=synthetic.features.shape[0])
plt.show()

# %% [markdown]
# ## 9. Resampling dead latents
#
# **Why.** ReLU SAEs lose latents too: if a latent's pre-activation becomes negative on every
# input, it never gets gradient again. Bricken et al. periodically **resample** dead latents.
# The library's version (`sae_course.sae.resample_dead_latents`; `TrainConfig(resample_every=...)`)
# scores the inputs of the *current training batch* (512 here) and picks, for each dead latent,
# one of them with probability proportional to the square of its reconstruction loss (inputs
# the SAE handles badly); the latent's decoder row becomes that input minus `b_dec`,
# normalised; its encoder vector the same direction at 0.2 × the live latents' average encoder
# norm; its bias 0; and its Adam state is reset. Bricken et al. draw the candidates from a large
# random sample of the training data instead of one batch, so each dead latent has far more
# inputs to choose from; with only 64 latents and 512 inputs a batch is enough here.
#
# To see the effect we need dead latents: here an SAE with exactly as many latents as
# features (64) and Bricken's original, independent encoder initialisation (the library's
# default starts `W_enc` as `W_dec` transposed, Gao et al.'s trick that by itself prevents many
# dead latents), on sparser data (p = 0.01).
#
# **Expect:** without resampling a few latents die and their features are never found; with
# resampling fewer latents are dead at the end and more features are recovered. This run has
# the same 600 steps on every budget: 51 of 64 recovered and 9.4% dead without resampling;
# 57 of 64 and 4.7% dead with it, after 12 latents were resampled.

# %%
sparse_data = SyntheticFeatures(64, 32, feature_probability=0.01, seed=settings.seed,
                                device=device)


def sparse_batch(step: int) -> Tensor:
    g = torch.Generator(device=device).manual_seed(30_000 + step)
    return sparse_data.sample(512, g)[0]


x_sparse = sparse_data.sample(8192, torch.Generator(device=device).manual_seed(7))[0]
runs = {}
for label, every in (("no resampling", 0), ("resample every 100 steps", 100)):
    cfg = SAEConfig(d_in=32, d_sae=64, architecture="relu", sparsity_coefficient=0.3,
                    dead_after_tokens=4096, tied_init=False)
    sae_ = SAE(cfg, device=device, seed=settings.seed)
    result = fit(sae_, sparse_batch, n_steps=600, lr=1e-2, lr_decay_steps=150,
                 resample_every=every, resample_until=0.7)
    m = ev.evaluate_sae(sae_, x_sparse, sparse_data.features)
    runs[label] = (result, m)
    print(f"{label:25s} recovered {m['recovered']}/64, MMCS {m['mmcs']:.3f}, dead "
          f"{m['dead_fraction']:.1%} (N = {m['dead_window_tokens']} tokens), resampled "
          f"{sum(n for _, n in result.resampled)} latents in total")

plotting.plot_dead_latents({label: result for label, (result, _) in runs.items()})
plt.show()

# %% [markdown]
# ## 10. Watching the dictionary learn
#
# **Why.** The training loop can keep snapshots of the (normalised) decoder. Scrub through them
# with the slider: on the left, every true feature's cosine with every decoder row (rows
# ordered by the feature they end up matching); on the right, each feature's best cosine. At
# step 0 the rows are random; they turn toward the features one by one.
#
# **Expect:** at step 0 no structure on the left and an MMCS of about 0.4 with no feature
# recovered (what 64 random directions in 32 dimensions give); then a diagonal emerging on the
# left and the bars rising toward 1 on the right. The cell prints the first and the last
# snapshot's numbers: MMCS 0.41 and 0 of 64 at step 0; after `ci`'s 300 steps about 0.92 with
# 45 of 64 recovered, and after `laptop`'s 1500 about 1.00 with 63 of 64.

# %%
scrub_steps = settings.scale(ci=300, laptop=1500, gpu=3000)
scrub_sae = SAE(SAEConfig(d_in=32, d_sae=64, architecture="topk", k=4, dead_after_tokens=4096),
                device=device, seed=settings.seed)
scrub = fit(scrub_sae, synthetic_batch, n_steps=scrub_steps, lr=3e-3,
            snapshot_every=max(scrub_steps // 30, 1))
for i in (0, -1):
    best = ev.best_cosines(synthetic.features.cpu(), scrub.snapshots[i])
    print(f"step {scrub.snapshot_steps[i]}: MMCS {best.mean():.3f}, recovered "
          f"{int((best > ev.RECOVERED_COSINE).sum())}/{len(best)}")
widgets.decoder_scrubber(scrub.snapshots, synthetic.features, steps=scrub.snapshot_steps)

# %% [markdown]
# ## Summary
#
# - An SAE is a one-layer overcomplete autoencoder with a sparsity constraint; on data with
#   known features it recovers them (MMCS close to 1).
# - ReLU + L1 needs a guard against shrinking latents behind growing decoder rows (unit-norm
#   rows or the weighted L1) and still shrinks its reconstructions ($\gamma < 1$); TopK fixes
#   the sparsity directly, BatchTopK lets it vary across tokens, JumpReLU learns per-latent
#   thresholds through a straight-through estimator, and the Gated SAE separates *whether* a
#   latent fires from *how much*, which removes most of the shrinkage given enough training
#   ($\gamma$ 0.95 or more at every setting on `laptop`).
# - Recovery peaks near the data's true L0; past it, explained variance keeps rising while
#   features are lost.
# - Dead latents waste capacity: AuxK (TopK) and resampling (ReLU) bring them back; initialising
#   `W_enc` from `W_dec` transposed and `b_dec` at the geometric median helps from the start.
# - A whole SAE is a forward pass, a loss and a short loop: you wrote all three and trained a
#   Gated SAE with them, and your numbers are the library's (the checks compare weights after
#   training).
#
# Notebook 04 trains exactly this `SAE` class on GPT-2 activations, where the TopK step uses a
# sparse decoder and sparse gradients (`benchmarks/sae_step.py` measures it).
