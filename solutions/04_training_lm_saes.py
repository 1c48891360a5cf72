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
# # 04 · Training an SAE on a language model
#
# Notebook 02 trained sparse autoencoders on toy data and notebook 03 built a supply of a
# language model's activations. This notebook joins the two: it trains an SAE on the residual
# stream of a real model, puts the SAE back **inside** the model, and measures what it costs
# the model to read the SAE's reconstruction instead of its own activation.
#
# That last step is what makes an SAE on a language model different from one on toy data.
# A reconstruction can look good as a vector (high explained variance) and still throw away
# exactly the directions the model relies on. So the headline numbers here are measured in
# the model: how much worse it predicts the next token with the SAE spliced in.
#
# You will write 8 pieces, each followed by a check cell:
#
# 1. `schedule`: the learning-rate warm-up and decay, and the sparsity warm-up;
# 2. `train_loop`: activation batches in, Adam steps out;
# 3. `fold_scale`: folding the normalisation factor into the SAE's weights;
# 4. `logits_with_sae`: the splice hook (the SAE's reconstruction replaces the activation);
# 5. `ce_metrics`: the CE gap and CE-loss recovered;
# 6. `kl_per_token`: KL(clean || with SAE) for every token;
# 7. `firing_stats`: firing density, dead and dense latents;
# 8. `diagnosis`: naming what went wrong in six training runs from their curves.
#
# Every demonstration uses the course library (`sae_course.training`, `sae_course.splice`,
# `sae_course.evaluation`, `sae_course.pretrained`), so if you are stuck on one exercise you
# can still run the rest.
#
# Reading: Bricken et al. 2023, *Towards Monosemanticity*
# ([transformer-circuits.pub/2023/monosemantic-features](https://transformer-circuits.pub/2023/monosemantic-features));
# Gao et al. 2024, *Scaling and Evaluating Sparse Autoencoders*
# ([arXiv 2406.04093](https://arxiv.org/abs/2406.04093)), whose TopK SAEs we train; Rajamanoharan
# et al. 2024, *Improving Dictionary Learning with Gated Sparse Autoencoders*
# ([arXiv 2404.16014](https://arxiv.org/abs/2404.16014)), for shrinkage; and Joseph Bloom's
# GPT-2 small residual SAEs, `gpt2-small-res-jb`
# ([Hugging Face](https://huggingface.co/jbloom/GPT2-Small-SAEs-Reformatted)).

# %% tags=["setup"]
import copy
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import display
from torch import Tensor
from tqdm.auto import tqdm

from sae_course import activations as acts_lib
from sae_course import checks, plotting, pretrained, widgets
from sae_course import evaluation as ev
from sae_course import text as text_lib
from sae_course.activations import ActivationStore
from sae_course.broken_runs import DIAGNOSES, load_broken_runs
from sae_course.models import load_model, model_name_of
from sae_course.sae import SAE, SAEConfig
from sae_course.settings import get_settings, seed_everything
from sae_course.splice import bos_mask, spliced
from sae_course.training import TrainConfig, train_sae

settings = get_settings()
seed_everything(settings.seed)
print(settings)

# %% [markdown]
# ## 1. The model, the hook and the activations
#
# **Why.** An SAE is trained on one hook of one model. We take the residual stream entering
# the middle block, `blocks.{L}.hook_resid_pre` with L = n_layers // 2: the same kind of hook
# as the public GPT-2 SAEs. The activation store of notebook 03
# (`sae_course.activations.ActivationStore`) serves shuffled batches of it, normalised to a
# mean norm of sqrt(d_model), with a disk cache so that a second pass over the data reads the
# activations back instead of running the model again.
#
# **Expect:** the model's name and sizes, and a scale factor well below 1 on the offline
# model (its middle residual stream has a mean norm several times sqrt(d_model)).

# %%
model = load_model(settings.model)
model_name = model_name_of(model)
layer = model.cfg.n_layers // 2
hook_name = f"blocks.{layer}.hook_resid_pre"
d_model = model.cfg.d_model
source = text_lib.auto_source(model_name)
context_len = min(128, model.cfg.n_ctx)
print(f"model: {model_name}, {model.cfg.n_layers} layers, d_model {d_model}; SAE at {hook_name}")

train_contexts = text_lib.contexts_for_model(
    model, settings.scale(ci=240, laptop=1600, gpu=8000), context_len, seed=settings.seed,
    source=source)
eval_tokens = text_lib.contexts_for_model(  # fresh text, never trained on
    model, settings.scale(ci=16, laptop=64, gpu=256), context_len, seed=settings.seed + 10_000,
    source=source)
cache_dir = tempfile.mkdtemp(prefix="sae_course_04_")
store = ActivationStore(
    model, train_contexts, hook_name, batch_size=settings.scale(ci=256, laptop=1024, gpu=4096),
    buffer_mb=settings.scale(ci=16.0, laptop=64.0, gpu=512.0),
    model_batch_size=settings.scale(ci=16, laptop=32, gpu=64), normalize=True,
    cache_dir=cache_dir, seed=settings.seed)
print(f"{len(train_contexts)} training contexts of {context_len} tokens, "
      f"{len(eval_tokens)} evaluation contexts; scale factor {float(store.scale_factor):.4f}")


def epochs(store: ActivationStore) -> Iterator[Tensor]:
    """The store's batches, pass after pass (from its disk cache after the first pass)."""
    while True:
        yield from store


# %% [markdown]
# ## 2. The schedule: warm-ups and decay
#
# **Why.** Two things go wrong at the start of SAE training. A freshly initialised SAE gets
# large, noisy gradients, and Adam's moment estimates are still empty, so a full learning rate
# at step 0 can throw latents into a region where they never fire again: dead before they
# learned anything. A **learning-rate warm-up** (linear from lr / warmup to lr) avoids that.
# And a sparsity penalty at full strength from the first step (an L1 or L0 term) kills latents
# before the reconstruction term has pulled them anywhere useful; a **sparsity warm-up** ramps
# its coefficient from 0 (Anthropic's April 2024 update; SAELens's `l1_warm_up_steps`). At the
# end, a **linear decay** of the learning rate to zero settles the weights (the runs here decay
# over the last fifth of training).
#
# The course's convention, the one `TrainConfig.lr_at` and `TrainConfig.sparsity_factor_at`
# follow, at step s (counting from 0) of n_steps:
#
# - warm-up factor (s + 1) / lr_warmup_steps while s < lr_warmup_steps, else 1;
# - decay factor (n_steps - s) / lr_decay_steps once s >= n_steps - lr_decay_steps, else 1;
# - learning rate = lr × warm-up factor × decay factor (both apply where they overlap);
# - sparsity factor (s + 1) / sparsity_warmup_steps while s < sparsity_warmup_steps, else 1.
#
# A count of 0 switches that part off.
#
# **Exercise.** Write the schedule.
#
# <details><summary>Hint</summary>
#
# Start from a factor of 1.0, multiply in the warm-up and then the decay where they apply;
# the last step's decay factor is 1 / lr_decay_steps, not 0.
# </details>

# %%
def schedule(step: int, n_steps: int, lr: float, lr_warmup_steps: int, lr_decay_steps: int,
             sparsity_warmup_steps: int) -> tuple[float, float]:
    """(learning rate, sparsity factor) at `step` (0-based) of `n_steps`; see the text."""
    # EXERCISE schedule
    factor = 1.0
    if lr_warmup_steps and step < lr_warmup_steps:
        factor = (step + 1) / lr_warmup_steps
    if lr_decay_steps and step >= n_steps - lr_decay_steps:
        factor *= (n_steps - step) / lr_decay_steps
    sparsity = 1.0
    if sparsity_warmup_steps and step < sparsity_warmup_steps:
        sparsity = (step + 1) / sparsity_warmup_steps
    return lr * factor, sparsity
    # END EXERCISE


# %%
checks.lm_sae.test_schedule(schedule)

# %% [markdown]
# The schedule of the run below (the library's `TrainConfig`): **expect** a short ramp up, a
# long flat stretch, and a straight line down to zero over the last fifth.

# %%
n_steps = settings.scale(ci=240, laptop=600, gpu=3000)
train_cfg = TrainConfig(n_steps=n_steps, lr=settings.scale(ci=3e-3, laptop=2e-3, gpu=1e-3),
                        lr_warmup_steps=n_steps // 20, lr_decay_steps=n_steps // 5,
                        log_every=max(n_steps // 60, 1), seed=settings.seed, progress=False,
                        threads=1)  # one thread: small SAE steps run fastest on one
fig, ax = plt.subplots(figsize=(7, 2.6))
ax.plot([train_cfg.lr_at(s) for s in range(n_steps)])
ax.set(xlabel="step", ylabel="learning rate", title=f"Warm-up and decay over {n_steps} steps")
plt.show()

# %% [markdown]
# ## 3. The training loop
#
# **Why.** Everything an SAE learns comes from this loop. Per step:
#
# 1. take the next batch of activations [batch, d_in];
# 2. read the learning rate and the sparsity factor for this step from the schedule and set
#    the learning rate on every parameter group of the optimiser;
# 3. `out = sae(x)`: the SAE returns its reconstruction and its named loss terms in
#    `out.losses`: "mse" always, "l1" (ReLU) or "l0" (JumpReLU) for the sparsity penalty, and
#    "aux" (TopK's AuxK loss on dead latents);
# 4. loss = the sum of the terms, the sparsity term ("l1" or "l0") times the sparsity factor;
# 5. `optimizer.zero_grad()`, `loss.backward()`, then `sae.before_optimizer_step()`,
#    `optimizer.step()`, `sae.after_optimizer_step()` (the architecture's hooks: for a ReLU
#    SAE with unit-norm decoder rows they remove the gradient along each row and renormalise
#    the rows; for JumpReLU they keep thresholds positive);
# 6. `sae.record_firing(out.fired(), n_tokens)`: the dead-latent tracker. A latent with no
#    activation in the last `cfg.dead_after_tokens` tokens counts as dead, and TopK's AuxK loss
#    trains exactly those.
#
# The library's `train_sae` does this (and logging, checkpoints, resampling), and the check
# compares your loop with it, step by step, on three architectures.
#
# **Exercise.** Use `torch.optim.Adam(sae.parameters(), lr=...)` with its default betas, and
# return the total loss of every step.
#
# <details><summary>Hint</summary>
#
# `for step in range(n_steps): x = next(batches)`; compare the term's name with
# `name in ("l1", "l0")`; `float(loss)` gives the number to keep. The check tells you which
# step first differs.
# </details>

# %%
def train_loop(sae: SAE, batches: Iterator[Tensor], n_steps: int,
               schedule: Callable[[int], tuple[float, float]]) -> list[float]:
    """Train `sae` in place for `n_steps` Adam steps on `batches`; returns the losses.

    `schedule(step)` gives (learning rate, sparsity factor) for each step.
    """
    # EXERCISE train_loop
    optimizer = torch.optim.Adam(sae.parameters(), lr=schedule(0)[0])
    losses = []
    for step in range(n_steps):
        x = next(batches)
        lr, sparsity_factor = schedule(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sae.train()
        out = sae(x)
        loss = sum(term * sparsity_factor if name in ("l1", "l0") else term
                   for name, term in out.losses.items())
        optimizer.zero_grad()
        loss.backward()
        sae.before_optimizer_step()
        optimizer.step()
        sae.after_optimizer_step()
        sae.record_firing(out.fired(), x.shape[0])
        losses.append(float(loss.detach()))
    return losses
    # END EXERCISE


# %%
checks.lm_sae.test_train_loop(train_loop)

# %% [markdown]
# ### Training live, with a monitor
#
# **Why.** Now a real run with the library's `train_sae`: a TopK SAE (Gao et al. 2024) with
# 8 × d_model latents, on batches from the store. Other courses send the curves to Weights &
# Biases; here `widgets.TrainingMonitor` draws them in the notebook, in place, while training
# runs: `train_sae(..., callback=monitor)` hands it every log entry. It shows the loss terms
# (log scale), L0, the explained variance of the batch and the dead fraction (the loop's
# tracker: no activation in the last `dead_after_tokens` tokens).
#
# **Expect:** the loss falling fast over the first few dozen steps, then slowly; L0 flat at k
# (TopK fixes it); the batch's explained variance climbing steeply at first and ending at
# about 0.95 or more; the AuxK term ("aux") only appearing once some latents have gone silent for
# `dead_after_tokens` tokens. The cell prints the last log entry.

# %%
k = 16 if model_name != "gpt2" else 32
sae_cfg = SAEConfig(d_in=d_model, d_sae=8 * d_model, architecture="topk", k=k,
                    dead_after_tokens=settings.scale(ci=20_000, laptop=100_000, gpu=1_000_000),
                    extra={"hook_name": hook_name, "model_name": model_name})
sae = SAE(sae_cfg, device=settings.device, seed=settings.seed)
monitor = widgets.TrainingMonitor(n_steps=n_steps, title=f"TopK SAE at {hook_name}")
display(monitor)
result = train_sae(sae, epochs(store), train_cfg, callback=monitor)
monitor.close()
last = result.history[-1]
print(f"step {last['step']}: loss {last['loss']:.3f}, L0 {last['l0']:.1f}, explained variance "
      f"{last['explained_variance']:.3f}, dead {last['dead_fraction']:.1%} "
      f"({n_steps * store.batch_size:,} training tokens)")

# %% [markdown]
# ### Interrupting and resuming
#
# **Why.** Long runs get interrupted: a laptop lid closes, a Colab session ends, you press the
# stop button. With `checkpoint_dir=...`, `train_sae` saves the SAE, Adam's moments and the log
# every `checkpoint_every` steps, and training again with the same folder resumes from the last
# checkpoint. It ends exactly where an uninterrupted run would have, because every batch and
# every random number is the same.
#
# Below a callback plays the part of the stop button: it raises `KeyboardInterrupt` partway
# through. **Expect:** the run stops, the resumed run replays the steps already logged and
# continues, and its weights equal those of an uninterrupted run to within rounding (the
# printed difference is tiny or exactly 0).

# %%
demo_steps = settings.scale(ci=60, laptop=200, gpu=400)
demo_cfg = TrainConfig(n_steps=demo_steps, lr=2e-3, lr_warmup_steps=demo_steps // 10,
                       log_every=10, checkpoint_every=20, seed=settings.seed, progress=False,
                       threads=1)
demo_sae_cfg = SAEConfig(d_in=d_model, d_sae=2 * d_model, architecture="topk", k=k)
checkpoint_dir = tempfile.mkdtemp(prefix="sae_course_ckpt_")
stop_at = demo_steps // 2 + 10


def press_stop(values: dict[str, float]) -> None:
    if values["step"] == stop_at:
        raise KeyboardInterrupt


runs = tqdm(total=3, desc="demo runs: uninterrupted, interrupted, resumed", unit="run")
uninterrupted = SAE(demo_sae_cfg, device=settings.device, seed=settings.seed)
train_sae(uninterrupted, epochs(store), demo_cfg)
runs.update()
interrupted = SAE(demo_sae_cfg, device=settings.device, seed=settings.seed)
try:
    train_sae(interrupted, epochs(store), demo_cfg, checkpoint_dir=checkpoint_dir,
              callback=press_stop)
except KeyboardInterrupt:
    saved = json.loads((Path(checkpoint_dir) / "state.json").read_text())["step"]
    print(f"interrupted at step {stop_at}; the last checkpoint holds step {saved}")
runs.update()
resumed = SAE(demo_sae_cfg, device=settings.device, seed=settings.seed)
steps_seen = []
train_sae(resumed, epochs(store), demo_cfg, checkpoint_dir=checkpoint_dir,
          callback=lambda values: steps_seen.append(int(values["step"])))
runs.update()
runs.close()
gap = max(float((a - b).abs().max()) for a, b in
          zip(uninterrupted.state_dict().values(), resumed.state_dict().values(), strict=True))
print(f"resumed run logged steps {steps_seen[0]}..{steps_seen[-1]}; largest weight difference "
      f"from the uninterrupted run: {gap:.2e}")
shutil.rmtree(checkpoint_dir)

# %% [markdown]
# ## 4. Folding the normalisation into the weights
#
# **Why.** The SAE was trained on normalised activations, c·x with c = `store.scale_factor`.
# The model speaks raw activations x. Rather than multiplying by c on the way in and dividing
# on the way out every time, we change the weights once so that the SAE takes x and returns a
# reconstruction of x (the shipped SAEs are stored this way, as are SAELens files that say
# `normalize_activations: none`). With s = c:
#
# $$\big(s x - b_{dec}\big) W_{enc} + b_{enc} = \big(x - b_{dec}/s\big)\,(s W_{enc}) + b_{enc},
# \qquad \frac{z W_{dec} + b_{dec}}{s} = z\,\frac{W_{dec}}{s} + \frac{b_{dec}}{s}.$$
#
# So W_enc is multiplied by s, W_dec and b_dec are divided by it, and b_enc (and any
# threshold) stays: the latents z do not change at all, only the units around them.
#
# **Exercise.** Return a new SAE; leave the one you are given as it was.
#
# <details><summary>Hint</summary>
#
# `folded = copy.deepcopy(sae)`, then change its parameters in place inside
# `with torch.no_grad():` (`.mul_`, `.div_`).
# </details>

# %%
def fold_scale(sae: SAE, scale: float) -> SAE:
    """A copy of `sae` (trained on activations * scale) that takes raw activations and
    returns raw reconstructions, with the same latents."""
    # EXERCISE fold_scale
    folded = copy.deepcopy(sae)
    with torch.no_grad():
        folded.W_enc.mul_(scale)
        folded.W_dec.div_(scale)
        folded.b_dec.div_(scale)
    return folded
    # END EXERCISE


# %%
checks.lm_sae.test_fold_scale(fold_scale)

# %% [markdown]
# With the library's `fold_scale_into_sae` (it works in place): **expect** identical latents
# and reconstructions, in the model's units, to within float32 rounding.

# %%
raw_sae = copy.deepcopy(sae).eval()
acts_lib.fold_scale_into_sae(raw_sae, store.scale_factor)
x_raw = acts_lib.flatten_activations(acts_lib.harvest(model, eval_tokens[:4], hook_name))
with torch.no_grad():
    z_norm = sae.eval().encode(store.normalize(x_raw))
    z_raw = raw_sae.encode(x_raw)
    x_hat_raw = raw_sae.decode(z_raw)
    x_hat_back = store.unnormalize(sae.decode(z_norm))
print(f"latents differ by at most {(z_raw - z_norm).abs().max():.1e}; reconstructions by "
      f"{(x_hat_raw - x_hat_back).abs().max():.1e} (activation norm about "
      f"{x_raw.norm(dim=-1).mean():.1f})")

# %% [markdown]
# ## 5. The SAE inside the model
#
# **Why.** To measure what the model loses, we **splice** the SAE into the forward pass: a hook
# at `hook_name` replaces the activation x by the reconstruction x_hat, and everything after
# the hook computes with the SAE's version. TransformerLens 4 has no `HookedSAETransformer`
# (that lived in SAELens on TransformerLens 3), so we do it with a plain hook.
#
# One position is left alone: **BOS**. Position 0 holds the beginning-of-sequence token; its
# residual vector is the same in every context (it sees only itself) and on GPT-2 an outlier
# many times larger than the others. The SAE was never trained on it (the store drops it), so
# splicing it in would measure an input the SAE never saw. The BOS token also appears *inside*
# contexts, as the separator between documents; those positions are ordinary tokens and are
# spliced. So: untouched where the position is 0 and the token is BOS.
#
# **Exercise.** Return the logits of one forward pass with the reconstruction spliced in.
#
# <details><summary>Hint</summary>
#
# Build a [batch, pos] boolean mask `keep` that is True only at position 0 of contexts that
# start with `model.tokenizer.bos_token_id`. In the hook, `x_hat = sae.decode(sae.encode(x))`
# and `torch.where(keep[..., None], x, x_hat)`. `model.run_with_hooks(tokens,
# fwd_hooks=[(hook_name, hook_fn)])` runs once and removes its hook afterwards;
# `model.add_hook` would leave it there.
# </details>

# %%
def logits_with_sae(model, sae: SAE, tokens: Tensor, hook_name: str) -> Tensor:
    """Logits [batch, pos, d_vocab] of one forward pass in which the activation at
    `hook_name` is replaced by the SAE's reconstruction, except at the BOS position."""
    # EXERCISE logits_with_sae
    bos = model.tokenizer.bos_token_id
    keep = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
    keep[:, 0] = tokens[:, 0] == bos

    def hook_fn(x: Tensor, hook) -> Tensor:
        x_hat = sae.decode(sae.encode(x))
        return torch.where(keep[..., None].to(x.device), x, x_hat)

    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook_fn)])
    # END EXERCISE


# %%
checks.lm_sae.test_logits_with_sae(logits_with_sae)

# %% [markdown]
# The library's `sae_course.splice` is the one place the later notebooks splice an SAE: the
# same reconstruction mode, an "error" mode (next section) and zero-ablation, with the BOS
# position found from the token and position ids so that it also works during `generate`.
#
# ### Measuring the cost: cross-entropy
#
# **Why.** The model's loss on text is the **cross-entropy** (CE): the mean over predictions
# of -log p(actual next token), in nats. The logits at position t predict token t + 1. We run
# each batch three times: clean (CE_clean), with the SAE spliced in (CE_sae), and with the
# activation **zero-ablated**, replaced by 0 (CE_zero: the model with no information at all at
# this hook). Then:
#
# - **CE gap** = CE_sae - CE_clean, in nats per token: how much worse the model predicts text
#   when it has to read the SAE's reconstruction. This is the course's headline number.
# - **CE-loss recovered** = (CE_zero - CE_sae) / (CE_zero - CE_clean): where the SAE sits between
#   "nothing at this hook" (0) and "the real activation" (1). Widely reported (often as the
#   "fraction of loss recovered"), but it saturates, as you will see.
#
# The prediction made *at* the BOS position (of the first real token, from BOS alone) is left
# out of all three: no splice touches BOS, so it is the same in every run and would only dilute
# the gap. Predictions made at document separators inside a context count as usual.
#
# **Exercise.** Return a dict with `ce_clean`, `ce_sae`, `ce_zero`, `ce_gap` and
# `ce_recovered` (floats).
#
# <details><summary>Hint</summary>
#
# `log_probs = logits[:, :-1].float().log_softmax(-1)` and
# `-log_probs.gather(-1, tokens[:, 1:, None]).squeeze(-1)` give the loss of every prediction,
# [batch, pos - 1]. The predictions to count: `predicted = torch.ones_like(tokens[:, :-1],
# dtype=torch.bool)`, then `predicted[:, 0] = tokens[:, 0] != bos_token_id`.
# </details>

# %%
def ce_metrics(logits_clean: Tensor, logits_sae: Tensor, logits_zero: Tensor, tokens: Tensor,
               bos_token_id: int) -> dict[str, float]:
    """CE clean / with the SAE / zero-ablated (nats per prediction, the prediction at the BOS
    position left out), the CE gap and CE-loss recovered."""
    # EXERCISE ce_metrics
    predicted = torch.ones_like(tokens[:, :-1], dtype=torch.bool)
    predicted[:, 0] = tokens[:, 0] != bos_token_id

    def ce(logits: Tensor) -> float:
        log_probs = logits[:, :-1].float().log_softmax(-1)
        loss = -log_probs.gather(-1, tokens[:, 1:, None]).squeeze(-1)
        return float(loss[predicted].mean())

    out = {"ce_clean": ce(logits_clean), "ce_sae": ce(logits_sae), "ce_zero": ce(logits_zero)}
    out["ce_gap"] = out["ce_sae"] - out["ce_clean"]
    out["ce_recovered"] = (out["ce_zero"] - out["ce_sae"]) / (out["ce_zero"] - out["ce_clean"])
    return out
    # END EXERCISE


# %%
checks.lm_sae.test_ce_metrics(ce_metrics)

# %% [markdown]
# ### Whole distributions: KL divergence
#
# **Why.** The CE gap only looks at the probability of the token that actually came next. The
# SAE could leave that one alone and still reshuffle everything else the model believed. The
# **KL divergence** KL(p_clean || p_sae) = Σ_v p_clean(v) (log p_clean(v) - log p_sae(v))
# compares the whole next-token distributions, at every position; it is never negative and 0
# only when they agree. It is in nats, like the CE gap, and it is often a training loss too
# (fine-tuning an SAE to match the model's outputs), so it must keep its gradient.
#
# **Exercise.** KL(p_clean || p_sae) for every position.
#
# <details><summary>Hint</summary>
#
# Work with `log_softmax` (never `softmax(...).log()`, which gives log 0 = -inf for
# improbable tokens), in float32: `logits.float().log_softmax(-1)`. Then `p = log_p.exp()` and
# sum over the vocabulary.
# </details>

# %%
def kl_per_token(logits_clean: Tensor, logits_sae: Tensor) -> Tensor:
    """[batch, pos] KL(p_clean || p_sae) in nats, from logits [batch, pos, d_vocab]."""
    # EXERCISE kl_per_token
    log_p = logits_clean.float().log_softmax(-1)
    log_q = logits_sae.float().log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)
    # END EXERCISE


# %%
checks.lm_sae.test_kl_per_token(kl_per_token)

# %% [markdown]
# ### Every number at once
#
# `ev.evaluate_lm(sae, model, tokens, hook_name)` runs the three forward passes per batch and
# returns every metric of this notebook, on fresh evaluation text, BOS excluded (the docs page
# `docs/metrics.md` defines each). It also reports two numbers about the vectors themselves:
#
# - **L0**: the mean number of non-zero latents per token;
# - **explained variance** = 1 - E||x - x_hat||² / E||x - E[x]||² over the evaluation tokens:
#   1 is perfect, 0 no better than always answering the mean activation.
#
# (SAELens and SAEBench also print an `explained_variance`, but with another denominator, so
# their numbers and these are not comparable; compare course numbers with course numbers.)
#
# **Predict, then reveal.** Zero-ablating the middle of the residual stream leaves the model
# with no information about the text so far. Before running the cell: will CE_zero be a little
# or a lot above CE_clean? And if the SAE's CE gap is small, what does that make CE-loss
# recovered?
#
# <details><summary>Reveal</summary>
#
# A lot: on the offline model the cell prints a CE_clean of about 1.2 nats and a CE_zero of
# about 11.1, some ten nats more, far more than any usable SAE costs. So the denominator of
# CE-loss recovered is huge and the ratio sits very close to 1 for every decent SAE (above
# 0.998 here): an SAE with ten times the gap of another still scores, say, 0.99 against
# 0.999. The gap in nats shows the tenfold difference; the ratio hides it. That is why the
# course leads with the CE gap and reports the raw CE values beside the ratio.
# </details>

# %%
evaluation = ev.evaluate_lm(raw_sae, model, eval_tokens, hook_name, batch_size=16)
print(evaluation)

# %% [markdown]
# ### What the error term holds
#
# **Why.** The SAE's error x - x_hat is everything the dictionary did not capture. Two
# experiments tell us what is in it:
#
# 1. **Error kept.** `splice` mode "error" puts x_hat + (x - x_hat) back, the error detached
#    from the gradient: numerically the clean activation, so the CE gap must be 0, yet the
#    latents carry gradients (Parts 05 and 06 use this to attribute and to edit).
# 2. **The error replaced by noise of the same size.** If the error were just isotropic noise,
#    adding random noise of the same norm to x, token by token, would cost the model as much
#    as the SAE's error does.
#
# **Predict, then reveal.** Will x + noise (with ||noise|| = ||x - x_hat|| per token) cost the
# model more or less than x_hat?
#
# <details><summary>Reveal</summary>
#
# Less, by a wide margin: the cell prints a gap several times smaller for the noise than for
# the SAE's reconstruction. The model shrugs off random noise of that size, but not the SAE's
# error: the error is not noise, it lies along directions the model reads. (Gurnee 2024 made
# the same observation on GPT-2 SAEs and called such errors "pathological".)
# </details>

# %%
def noise_like_error(tokens: Tensor, generator: torch.Generator):
    """A hook adding random noise whose norm, token by token, is that of the SAE's error."""
    keep = bos_mask(tokens, model.tokenizer.bos_token_id)[..., None]

    def hook_fn(x: Tensor, hook) -> Tensor:
        error_norm = (x - raw_sae.decode(raw_sae.encode(x))).norm(dim=-1, keepdim=True)
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        return torch.where(keep, x, x + noise / noise.norm(dim=-1, keepdim=True) * error_norm)

    return hook_fn


noise_gen = torch.Generator().manual_seed(settings.seed)
gaps = {"error kept": [], "noise like the error": []}
with torch.no_grad():
    for i in tqdm(range(0, len(eval_tokens), 16), desc="error kept, noise like the error",
                  unit="batch"):
        batch = eval_tokens[i:i + 16].to(model.cfg.device)
        predicted = ~bos_mask(batch, model.tokenizer.bos_token_id)[:, :-1]
        ce_clean = ev.next_token_loss(model(batch), batch)[predicted]
        with spliced(model, raw_sae, hook_name, mode="error"):
            ce_error = ev.next_token_loss(model(batch), batch)[predicted]
        noisy = model.run_with_hooks(batch, fwd_hooks=[(hook_name,
                                                        noise_like_error(batch, noise_gen))])
        ce_noise = ev.next_token_loss(noisy, batch)[predicted]
        gaps["error kept"].append((ce_error - ce_clean).mean())
        gaps["noise like the error"].append((ce_noise - ce_clean).mean())
print(f"CE gap with the SAE's reconstruction:          {evaluation.ce_gap:.4f} nats/token")
for label, values in gaps.items():
    print(f"CE gap with {label + ':':34s}{float(torch.stack(values).mean()):.4f} nats/token")

# %% [markdown]
# ## 6. The health of the latents: firing density
#
# **Why.** A latent's **firing density** is the fraction of tokens on which it is non-zero.
# It tells you whether the dictionary is being used:
#
# - a **dead latent** has no activation in the last N tokens: it costs parameters and does
#   nothing. A dead count only means something with its window N, so N is always reported with
#   it (a merely rare latent looks dead on a short window);
# - a **dense latent** fires on more than 10% of tokens. A few can be real (position, "this is
#   text"); many mean the SAE has not found sparse features.
#
# The densities span many orders of magnitude, so they are plotted as log10(density + 1e-10):
# a latent that never fires sits at -10, one that fires on every token at 0.
#
# **Exercise.** Density per latent, and the numbers of dead and dense latents, from latents
# [..., d_sae] (every dimension but the last is tokens; the window N is their number).
#
# <details><summary>Hint</summary>
#
# `latents.reshape(-1, latents.shape[-1])`, then `(flat != 0).float().mean(0)`. Dense is
# strictly more than the threshold.
# </details>

# %%
def firing_stats(latents: Tensor, dense_threshold: float = 0.1) -> tuple[Tensor, int, int]:
    """(density [d_sae], n_dead, n_dense): the fraction of tokens each latent fires on, how many
    never fire, how many fire on more than `dense_threshold` of the tokens."""
    # EXERCISE firing_stats
    flat = latents.reshape(-1, latents.shape[-1])
    density = (flat != 0).float().mean(0)
    return density, int((density == 0).sum()), int((density > dense_threshold).sum())
    # END EXERCISE


# %%
checks.lm_sae.test_firing_stats(firing_stats)

# %% [markdown]
# The densities of our SAE on the evaluation tokens (from `evaluate_lm`), and, where the course's
# shipped SAEs are installed, those of the shipped SAE of the same shape (same hook, width and
# k) beside it, trained far longer.
# **Expect:** a broad hump of densities a few orders of magnitude below 1 (a TopK SAE with k of
# d_sae latents active averages k / d_sae per latent), a tail of rare latents to the left, and
# the latents that did not fire on the evaluation tokens piled up at -10. How many that is
# depends on the window: the cell also prints the training loop's own count, over a longer
# window, which is far smaller. A latent that fired on one evaluation token sits at
# log10(1 / N).

# %%
def suite_entries() -> list:
    """The shipped SAEs of the offline model (an empty list where they are not installed)."""
    try:
        return pretrained.list_pretrained(pretrained.SUITE_RELEASE)
    except FileNotFoundError as err:
        print(f"(the shipped SAE suite is not installed here: {err})")
        return []


suite = suite_entries() if model_name == "offline" else []
densities = {f"ours ({n_steps} steps)": evaluation.log10_density}
main_entry = next((e for e in suite if e.hook_name == hook_name and e.architecture == "topk"
                   and e.d_sae == sae_cfg.d_sae and e.k == k and e.role != "seed"), None)
if main_entry is not None:
    main_sae = pretrained.load_pretrained(pretrained.SUITE_RELEASE, main_entry.sae_id,
                                          device=settings.device)
    main_eval = ev.evaluate_lm(main_sae, model, eval_tokens, hook_name, batch_size=16)
    densities[f"shipped {main_entry.sae_id}"] = main_eval.log10_density
    print(f"shipped: L0 {main_eval.l0:.1f}, explained variance {main_eval.explained_variance:.3f}, "
          f"CE gap {main_eval.ce_gap:.4f}, dead {main_eval.dead}/{main_eval.d_sae}")
print(f"ours: dead {evaluation.dead}/{evaluation.d_sae}, dense {evaluation.dense}/"
      f"{evaluation.d_sae} (window: the {evaluation.n_tokens:,} evaluation tokens); the training "
      f"loop's tracker, with a window of {sae_cfg.dead_after_tokens:,} training tokens, counts "
      f"{int(sae.dead_mask().sum())} dead")
plotting.plot_density_histograms(densities, window_tokens=evaluation.n_tokens)
plt.show()

# %% [markdown]
# ## 7. Shrinkage
#
# **Why.** An L1 penalty charges every latent for its size, so a ReLU + L1 SAE learns to make
# its latents a little too small, and its reconstructions come out too short: **shrinkage**.
# Rajamanoharan et al. (2024, Gated SAEs) measure it with the **relative reconstruction bias**
#
# $$\gamma = \frac{E\lVert \hat x\rVert^2}{E\langle x, \hat x\rangle},$$
#
# the γ that makes x_hat / γ closest to x. It is about 1 without shrinkage and 0.8 when
# x_hat = 0.8 x. You wrote it in notebook 02 (`reconstruction_stats`), where it showed the toy
# ReLU + L1 SAEs shrinking; here the library's `evaluation.shrinkage` measures it on the
# language model, in every evaluation (`evaluate_lm(...).shrinkage`). TopK and JumpReLU SAEs do
# not pay for the size of a latent, so they should sit near 1.
#
# **Predict, then reveal.** We train a ReLU + L1 SAE of the same width on the same data, for
# half as many steps (a sparsity warm-up over the first tenth) and an L1 coefficient of 1.5;
# the cell prints its L0 beside the TopK SAE's. Which one will have γ further below 1?
#
# <details><summary>Reveal</summary>
#
# The ReLU + L1 SAE: its penalty pulls every active latent toward zero, so its reconstructions
# are short and γ falls below 1, while the TopK SAE's γ stays close to 1. The cell prints both;
# the shipped ReLU + L1 SAE in the next section's table shrinks too.
# </details>

# %%
relu_cfg = SAEConfig(d_in=d_model, d_sae=8 * d_model, architecture="relu",
                     sparsity_coefficient=1.5,
                     extra={"hook_name": hook_name})
relu_sae = SAE(relu_cfg, device=settings.device, seed=settings.seed)
relu_steps = n_steps // 2
train_sae(relu_sae, epochs(store), TrainConfig(
    n_steps=relu_steps, lr=train_cfg.lr, lr_warmup_steps=relu_steps // 20,
    lr_decay_steps=relu_steps // 5, sparsity_warmup_steps=relu_steps // 10, seed=settings.seed,
    threads=1))
acts_lib.fold_scale_into_sae(relu_sae, store.scale_factor)
relu_eval = ev.evaluate_lm(relu_sae, model, eval_tokens, hook_name, batch_size=16)
for label, m in (("TopK", evaluation), ("ReLU + L1", relu_eval)):
    print(f"{label:10s} shrinkage gamma {m.shrinkage:.3f}  L0 {m.l0:6.1f}  explained variance "
          f"{m.explained_variance:.3f}  CE gap {m.ce_gap:.4f}")

# %% [markdown]
# ## 8. The shipped SAEs: the L0-vs-CE-gap frontier
#
# **Why.** One SAE is one point. The course ships a suite for the offline model
# (`pretrained.list_pretrained("storyworld-res")`, trained far longer than we can here): a TopK
# SAE at every layer, a family of widths at the middle layer, a sweep of k, reseeds and a
# ReLU + L1 SAE beside them (its shrinkage is in the table). Plotting L0 against the CE gap shows the **frontier**: what each amount of
# sparsity costs the model. Lower and further left is better. Its `SUITE_CARD.md` lists every
# number.
#
# **Predict, then reveal.** Along the k sweep (same width, k from 4 to 32), how do the CE gap
# and the explained variance move as k grows?
#
# <details><summary>Reveal</summary>
#
# More active latents per token buy a better reconstruction, with diminishing returns: the
# CE gap falls steeply from the smallest k (the table shows by how much) and then flattens,
# because once a token has enough latents, more of them add little. Compare like with like:
# in the suite only the main SAE trains for the full budget and the others for a sixth of it
# (see `SUITE_CARD.md`), so the main SAE can come out ahead of a larger k trained less.
# And a lower gap is not the whole story: a latent is less specific when each token uses more
# of them (Chanin et al. 2025, *Sparse but Wrong*: the wrong L0 gives wrong features), so the
# frontier tells you the cost of each choice, not which choice is right.
# </details>

# %%
ARCHITECTURE_LABELS = {"relu": "ReLU + L1", "jumprelu": "JumpReLU", "batchtopk": "BatchTopK"}


def suite_point(entry) -> dict[str, float]:
    return {**entry.metrics, "d_sae": entry.d_sae, "k": entry.k,
            "label": entry.sae_id.split("/")[-1]}


if suite:
    middle = [e for e in suite if e.hook_name == hook_name and e.role != "seed"]
    main_width = main_entry.d_sae if main_entry is not None else max(e.d_sae for e in middle)
    groups = {
        f"TopK, k sweep (d_sae {main_width})": [suite_point(e) for e in middle
                                               if e.architecture == "topk"
                                               and e.d_sae == main_width],
        f"TopK, widths (k {k})": [suite_point(e) for e in middle if e.architecture == "topk"
                                  and e.k == k],
        **{ARCHITECTURE_LABELS.get(arch, arch): [suite_point(e) for e in middle
                                                 if e.architecture == arch]
           for arch in sorted({e.architecture for e in middle} - {"topk"})},
        f"ours ({n_steps} steps)": [{**evaluation.as_dict(), "label": "ours"}],
    }
    groups = {label: points for label, points in groups.items() if points}
    print(f"{'SAE':20s} {'L0':>6s} {'CE gap':>8s} {'CE recovered':>13s} {'expl. var.':>10s} "
          f"{'shrinkage':>9s}")
    rows = {p["label"]: p for points in groups.values() for p in points}  # each SAE once
    for p in sorted(rows.values(), key=lambda p: (p["l0"], p.get("d_sae", 0))):
        print(f"{p['label']:20s} {p['l0']:6.1f} {p['ce_gap']:8.4f} {p['ce_recovered']:13.4f} "
              f"{p['explained_variance']:10.3f} {p.get('shrinkage', float('nan')):9.3f}")
    plotting.plot_ce_frontier(groups, annotate="label")
    plt.show()
else:
    print("No shipped suite for this model: the frontier needs the offline model's SAEs.")

# %% [markdown]
# ## 9. Diagnosing broken runs
#
# **Why.** Training runs fail quietly: the loss still goes down, the notebook still finishes.
# Knowing what a broken run *looks like* is most of what it takes to fix one. The course ships
# the logs of six short runs of the same TopK SAE at the offline model's middle layer
# (`scripts/make_broken_runs.py` made them): one is healthy, each of the others has one thing
# wrong. For each run you see its training curves and, on the right, its metrics measured in
# the model at the hook it was meant for (the dead window there is short: the evaluation text).
#
# The possible diagnoses (`DIAGNOSES`):

# %%
for key, description in DIAGNOSES.items():
    print(f"{key:20s} {description}")
broken = load_broken_runs()
plotting.plot_training_curves({name: run.history for name, run in broken.items()},
                              notes={name: run.note() for name, run in broken.items()})
plt.show()

# %% [markdown]
# **Exercise.** Map every run to one diagnosis (each is used once). Things to compare: the
# scale of the loss (the loss axis is shared by every row), where L0 sits and what it does,
# how explained variance and the dead fraction move, and whether the numbers in the model agree
# with the training curves.
#
# <details><summary>Hint</summary>
#
# Find the healthy run first: it is the one every other run differs from in exactly one way.
# A run whose training curves look healthy but which fails in the model was trained on
# something other than what it is used on. Loss values many times larger for the same
# explained variance mean activations on another scale.
# </details>

# %%
# diagnosis = {"run_A": "...", "run_B": "...", ...}  (a key of DIAGNOSES for every run)
# EXERCISE diagnosis
diagnosis = {
    "run_A": "lr_too_high",
    "run_B": "wrong_data",
    "run_C": "healthy",
    "run_D": "not_normalised",
    "run_E": "expansion_too_small",
    "run_F": "sparsity_too_weak",
}
# END EXERCISE

# %%
checks.lm_sae.test_diagnosis(diagnosis)

# %% [markdown]
# ## 10. On GPT-2
#
# **Why.** Everything above runs on GPT-2 small unchanged (set `SAE_COURSE_MODEL=gpt2`). Two
# things are only possible there: measuring a public SAE, Joseph Bloom's `gpt2-small-res-jb`
# at layer 8 (24,576 ReLU latents trained on OpenWebText; SAELens reports an L0 of about 60
# at that layer) with exactly the metrics of this notebook, and training a GPT-2 SAE of our own on a
# GPU budget. Expect, on GPT-2, a CE_zero many nats above CE_clean again, and so a CE-loss
# recovered close to 1 for the public SAE. (Its neurons can be browsed on Neuronpedia:
# `https://www.neuronpedia.org/gpt2-small/8-res-jb/<index>`.)

# %%
if model_name == "gpt2":
    gpt2_hook = "blocks.8.hook_resid_pre"
    jb_sae = pretrained.load_pretrained(pretrained.GPT2_RELEASE, gpt2_hook, device=settings.device)
    gpt2_tokens = text_lib.contexts_for_model(model, settings.scale(ci=8, laptop=32, gpu=128),
                                              128, seed=settings.seed + 20_000, source=source)
    print(ev.evaluate_lm(jb_sae, model, gpt2_tokens, gpt2_hook))
    if settings.budget == "gpu":
        gpt2_steps = 2_000  # 2000 batches of 4096 tokens: 8M tokens, each seen once
        gpt2_store = ActivationStore(
            model, text_lib.contexts_for_model(model, gpt2_steps * 4096 // 127 + 1_000, 128,
                                               seed=settings.seed, source=source),
            gpt2_hook, batch_size=4096, buffer_mb=1024.0, model_batch_size=64, normalize=True,
            seed=settings.seed)
        gpt2_sae = SAE(SAEConfig(d_in=768, d_sae=16 * 768, architecture="topk", k=32),
                       device=settings.device, seed=settings.seed)
        gpt2_monitor = widgets.TrainingMonitor(n_steps=gpt2_steps, title=f"GPT-2 {gpt2_hook}")
        display(gpt2_monitor)
        train_sae(gpt2_sae, gpt2_store, TrainConfig(
            n_steps=gpt2_steps, lr=1e-3, lr_warmup_steps=100, lr_decay_steps=400,
            log_every=20, seed=settings.seed), callback=gpt2_monitor)
        gpt2_monitor.close()
        acts_lib.fold_scale_into_sae(gpt2_sae, gpt2_store.scale_factor)
        print(ev.evaluate_lm(gpt2_sae, model, gpt2_tokens, gpt2_hook))
    else:
        print("On the gpu budget this cell also trains a TopK SAE (12,288 latents, k 32) on "
              "8M tokens of GPT-2's layer 8 and evaluates it beside gpt2-small-res-jb.")
else:
    print(f"This section needs GPT-2 (this run uses the {model_name} model). On GPT-2 it "
          "evaluates gpt2-small-res-jb at blocks.8.hook_resid_pre with evaluate_lm and, on the "
          "gpu budget, trains a TopK SAE there. Skipped.")

# %%
shutil.rmtree(cache_dir)  # the demo's activation cache; for real runs keep a folder of yours

# %% [markdown]
# ## Summary
#
# - Training an SAE on a language model is the toy loop of notebook 02 fed by the activation
#   store of notebook 03, with a learning-rate warm-up and decay and (for penalised SAEs) a
#   sparsity warm-up; checkpoints make it resumable to the bit.
# - The SAE is trained on normalised activations; folding the factor into W_enc, W_dec and b_dec
#   makes it read and write the model's own units with unchanged latents.
# - Spliced into the forward pass (BOS untouched), it is judged by what the model loses: the CE
#   gap in nats first, KL for whole distributions, CE-loss recovered (which saturates near 1)
#   with the raw CE values beside it.
# - Its error is not noise: noise of the same size costs the model much less.
# - Firing densities (with their window), dead and dense counts, and shrinkage say whether the
#   dictionary is healthy; the curves of a run say what went wrong when it is not.
#
# Next, notebook 05 asks what the latents of the shipped SAEs mean, with StoryWorld's ground
# truth to check the answers against.
