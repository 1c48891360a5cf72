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
# # 03 · Activations from a language model
#
# Notebooks 01 and 02 trained sparse autoencoders on toy data whose features we made up.
# From here on the data is real: the **activations of a language model** as it reads text.
# Before an SAE can be trained on them (notebook 04) we need a steady supply of them, a few
# million vectors, served in random order and on a sensible scale. That supply is called an
# **activation store**, and this notebook builds one piece by piece.
#
# The model is **GPT-2 small** loaded with [TransformerLens 4](https://transformerlensorg.github.io/TransformerLens/)
# (`TransformerBridge`), or, when GPT-2 cannot be downloaded, the course's own small
# **offline model**: a GPT-2-architecture model trained on *StoryWorld*, a synthetic language
# whose hidden factors (topic, sentiment, tense, entities...) we know, which later lets us check
# what an SAE finds. Everything here runs on both; `settings.model` chooses
# (`"auto"`: GPT-2 if it can be loaded, else the offline model).
#
# You will write 8 pieces, each followed by a check cell: capturing activations with hooks,
# the residual stream, its norms and how far BOS stands apart, stopping the forward pass early,
# packing text into contexts, flattening activations into tokens, the shuffle buffer, and the
# normalisation factor estimated from a stream of batches. Each has a hint in a collapsed block
# above it (click **Hint** to open it); the check cell after it says what differs when your
# answer is wrong. The demonstrations after each exercise use the course library's reference
# implementation (`sae_course.activations`, `sae_course.text`), so if you are stuck on one
# exercise you can still run the rest. Questions marked **Predict, then reveal** keep their
# answer folded: decide first, then open it.
#
# Reading: Bricken et al. 2023, *Towards Monosemanticity*
# ([transformer-circuits.pub/2023/monosemantic-features](https://transformer-circuits.pub/2023/monosemantic-features)),
# and Cunningham et al. 2023, *Sparse Autoencoders Find Highly Interpretable Features in
# Language Models* ([arXiv 2309.08600](https://arxiv.org/abs/2309.08600)): both train SAEs on
# activations harvested exactly this way.

# %% tags=["setup"]
import math
import shutil
import tempfile
import time
from collections.abc import Iterable
from itertools import islice
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import Tensor
from tqdm.auto import tqdm

from sae_course import activations as acts_lib
from sae_course import checks, probing
from sae_course import storyworld as sw
from sae_course import text as text_lib
from sae_course.activations import ActivationStore, StopForward
from sae_course.models import load_model, model_name_of
from sae_course.settings import get_settings, seed_everything

settings = get_settings()
seed_everything(settings.seed)
print(settings)

# %% [markdown]
# ## 1. Loading the model
#
# `load_model(settings.model)` boots the model through
# `TransformerBridge.boot_transformers(...)` and then calls `enable_compatibility_mode()`.
# Compatibility mode **folds each layer norm's scale into the next weights and centres the
# weights that write into the residual stream**. The model computes the same function, but the
# residual stream then matches what the old `HookedTransformer` produced, which is what
# public GPT-2 SAEs (such as `gpt2-small-res-jb`) were trained on. If you harvest activations
# without it, a pretrained SAE will not fit them.
#
# With `model="auto"` and no internet you will see a line saying the offline model was chosen.
#
# **Expect:** one line of sizes: 4 layers, d_model 192 and a vocabulary of 2726 for the
# offline model (12 layers, 768 and 50257 for GPT-2).

# %%
model = load_model(settings.model)
model_name = model_name_of(model)
cfg = model.cfg
print(f"model: {model_name}  layers={cfg.n_layers}  d_model={cfg.d_model}  heads={cfg.n_heads}  "
      f"vocab={cfg.d_vocab}  context={cfg.n_ctx}")

# %% [markdown]
# Text comes from a source that suits the model: for GPT-2 a streamed Hugging Face dataset
# (`sae_course.text.DEFAULT_DATASET`; StoryWorld text when it cannot be streamed, which GPT-2
# reads as plain English), for the offline model StoryWorld stories. (You can also
# use a folder of your own `.txt` files: `text_lib.load_texts("folder", n, folder="my_texts")`.)
# The tokenizer turns text into token ids; TransformerLens puts a **BOS** token
# (`<|endoftext|>`) in front.

# %%
source = text_lib.auto_source(model_name)  # "hf" for GPT-2 (if the dataset streams), else "storyworld"
sample_texts = text_lib.load_texts(source, n_texts=8, seed=settings.seed)
print(sample_texts[0][:300])
print(model.to_str_tokens(sample_texts[0][:80]))

# %% [markdown]
# ## 2. Hooks
#
# Every intermediate activation of a TransformerLens model passes through a **hook point**
# with a name such as `blocks.3.hook_resid_pre` (the residual stream entering block 3),
# `blocks.3.attn.hook_pattern` or `blocks.3.hook_mlp_out`. Two ways to read them
# ([docs](https://transformerlensorg.github.io/TransformerLens/)):
#
# - `logits, cache = model.run_with_cache(tokens, names_filter=[...])` stores activations in a
#   dictionary-like cache (easy, but it keeps everything it is asked for in memory);
# - `model.run_with_hooks(tokens, fwd_hooks=[(name, hook_fn), ...])` calls
#   `hook_fn(activation, hook)` at each named point during the forward pass. A hook that returns
#   `None` only reads; one that returns a tensor replaces the activation (notebook 06 steers
#   the model that way).
#
# Here are the names the model offers (block hooks written once with `{L}`):

# %%
print(acts_lib.describe_hook_names(model))
tokens = model.to_tokens(sample_texts[:4])[:, :32]
logits, cache = model.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_pre", "blocks.0.attn.hook_pattern"])
print("tokens", tuple(tokens.shape), "logits", tuple(logits.shape))
for name, value in cache.items():
    print(f"{name:35s} {tuple(value.shape)}")

# %% [markdown]
# (The cache lists `blocks.0.hook_in` too: that is the bridge's own name for the same point,
# and `blocks.0.hook_resid_pre` its TransformerLens alias. Both work everywhere.)
#
# **Exercise: `capture_activations`.** Read several activations in one forward pass with
# `run_with_hooks`, returning `{hook name: activation}`. Key each activation by the name you
# asked for; `hook.name` is the bridge's own name for the point (e.g. `blocks.0.hook_in` for
# `blocks.0.hook_resid_pre`), so do not use it. Use the `model` you are given (the check passes
# a model of its own), run it once, and leave no hook on it afterwards: `run_with_hooks` removes
# its hooks when the pass ends, even when a hook raises, while a hook added with
# `model.add_hook` stays until it is removed and runs in every later forward pass.
#
# <details><summary>Hint</summary>
#
# Write `make_hook(name)`, returning a `hook_fn(acts, hook)` that stores `acts.detach()` under
# `name`, and pass `[(name, make_hook(name)) for name in hook_names]` as `fwd_hooks`. A lambda
# written inside the loop would see only the loop variable's last value.
# </details>

# %%
def capture_activations(model: Any, tokens: Tensor, hook_names: list[str]) -> dict[str, Tensor]:
    """Run `model` once on `tokens` with a forward hook on each name; return {name: activation}."""
    # EXERCISE capture_activations
    storage: dict[str, Tensor] = {}

    def make_hook(name: str):
        def hook_fn(acts: Tensor, hook: Any) -> None:
            storage[name] = acts.detach()

        return hook_fn

    model.run_with_hooks(tokens, fwd_hooks=[(name, make_hook(name)) for name in hook_names])
    return storage
    # END EXERCISE


# %%
checks.activations.test_capture_activations(capture_activations)

# %% [markdown]
# ## 3. The residual stream
#
# Each block reads from and adds to one running vector per token, the **residual stream**.
# `blocks.{L}.hook_resid_pre` is the stream entering block L; the stream after the last block
# is `blocks.{n_layers-1}.hook_resid_post`. So there are `n_layers + 1` snapshots. Most SAEs
# on GPT-2 (including the public `gpt2-small-res-jb` ones) read `hook_resid_pre`.
#
# **Exercise: `residual_stream`.** Stack the `n_layers + 1` snapshots into one tensor
# `[n_layers + 1, batch, pos, d_model]` with one `run_with_cache` call.
#
# <details><summary>Hint</summary>
#
# Build the list of the `n_layers + 1` names first, pass it as `names_filter`, then
# `torch.stack` the cached tensors in that order.
# </details>

# %%
def residual_stream(model: Any, tokens: Tensor) -> Tensor:
    """[n_layers + 1, batch, pos, d_model]: resid_pre of every block, then the last block's resid_post."""
    # EXERCISE residual_stream
    n = model.cfg.n_layers
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    return torch.stack([cache[name] for name in names])
    # END EXERCISE


# %%
checks.activations.test_residual_stream(residual_stream)

# %% [markdown]
# How big is the stream, and does the first position (BOS) stand apart from the others? Two
# tensors answer it, and the plot below is drawn from them.
#
# **Exercise: `residual_norm_profile`.** Return `(norms, bos_ratio)`:
#
# - `norms`, `[n_layers + 1, pos]`: the L2 norm of each residual vector, averaged over the batch;
# - `bos_ratio`, `[n_layers + 1]`: at each depth, the BOS entry of `norms` (position 0) divided
#   by the mean of the other positions' entries. 1 means BOS is as long as the rest; an
#   attention sink shows as many times that.
#
# With a single position there is nothing to compare BOS with: raise a `ValueError` saying so.
# Leave the input as it is and keep its dtype (both tensors).
#
# <details><summary>Hint</summary>
#
# The norm is over the last dimension and the batch is dimension 1. Take the ratio from `norms`
# itself, position 0 against the mean of the positions after it: a ratio taken in each context
# and then averaged is a different number, and the check asks for the ratio of the means. Look
# at the number of positions (dimension 2) before anything else.
# </details>

# %%
def residual_norm_profile(resid: Tensor) -> tuple[Tensor, Tensor]:
    """[n_layers + 1, batch, pos, d] -> (norms [n_layers + 1, pos], bos_ratio [n_layers + 1]).

    norms: the L2 norm of each residual vector, averaged over the batch.
    bos_ratio: per depth, norms at position 0 (BOS) / the mean of norms at the other positions.
    ValueError when there is only one position.
    """
    # EXERCISE residual_norm_profile
    if resid.shape[2] < 2:
        raise ValueError(f"{resid.shape[2]} position: BOS has no other position to compare with")
    norms = resid.norm(dim=-1).mean(dim=1)
    bos_ratio = norms[:, 0] / norms[:, 1:].mean(dim=1)
    return norms, bos_ratio
    # END EXERCISE


# %%
checks.activations.test_residual_norm_profile(residual_norm_profile)

# %% [markdown]
# The cell below plots these norms, computed with the library's `residual_stream` and
# `residual_norm_profile`, across layers and across positions, and prints the BOS ratio at
# every depth.
#
# **Predict, then reveal.** Does the residual norm grow, shrink or stay level from the
# embeddings to the last layer? And does the first position (BOS) look like the others?
#
# <details><summary>Reveal</summary>
#
# The norm **grows with depth**: each block adds its output to the stream and little cancels,
# so the vectors get longer layer by layer (on GPT-2 from a few units at the embeddings to
# hundreds at the last layers). The **BOS position** stands apart on GPT-2: its norm is many
# times the others' from the first layers on, because the model uses it as an "attention
# sink", a place to put attention when nothing else is relevant. The small offline model
# (4 layers) has not grown such a sink: there BOS is never much longer than the other
# positions, and from the middle layer on it is shorter; the printed ratios say which case you
# have. Either way BOS is worth leaving out: position 0 sees only itself, so its vector is
# **the same in every context** (the second printed line measures it, at float rounding), one
# repeated point that says nothing about the text, and on GPT-2 a huge outlier an SAE would
# spend capacity on.
# </details>
#
# **Expect:** two log-scale panels. Left, the norm rising with depth (on the offline model from
# about 1.5 at the embeddings to about 200 after the last block); right, one flat line per
# layer across positions. Then the BOS ratio at every depth (on the offline model between 0.5x
# and 1.2x, and below 1x from the middle layer on) and a BOS difference between contexts of 0.

# %%
n_plot = settings.scale(ci=4, laptop=16, gpu=32)
plot_len = 64
plot_tokens = text_lib.contexts_for_model(model, n_plot, plot_len, seed=settings.seed, source=source)
resid = acts_lib.residual_stream(model, plot_tokens)
profile = acts_lib.residual_norm_profile(resid)
norms = profile.norms.cpu()

fig, axes = plt.subplots(1, 2, figsize=(9.2, 3.6))
depth = range(cfg.n_layers + 1)
axes[0].plot(depth, norms[:, 1:].mean(1), "o-", label="other positions (mean)")
axes[0].plot(depth, norms[:, 0], "s--", label="BOS (position 0)")
axes[0].set_xticks(list(depth))
axes[0].set(xlabel="layer (resid_pre; last = final resid_post)", ylabel="mean L2 norm",
            yscale="log", title="Residual norm across layers")
axes[0].legend()
for layer in sorted({0, cfg.n_layers // 2, cfg.n_layers}):
    axes[1].plot(norms[layer], label=f"layer {layer}")
axes[1].set(xlabel="position", ylabel="mean L2 norm", yscale="log", title="Residual norm across positions")
axes[1].legend()
plt.tight_layout()
plt.show()
ratios = "  ".join(f"{r:.2f}x" for r in profile.bos_ratio.tolist())
print(f"BOS norm / the other positions' mean norm, depth 0 to {cfg.n_layers}: {ratios}")
print(f"BOS vector, largest difference between contexts: {(resid[:, :, 0] - resid[:, :1, 0]).abs().max():.1e}")

# %% [markdown]
# ## 4. Stopping the forward pass early
#
# An SAE on `blocks.{L}.hook_resid_pre` never needs what happens after block L-1. Running the
# rest of the model is wasted work, most of it when L is small. A hook can **stop the forward
# pass** by raising an exception right after it has stored the activation; the caller catches
# that exception. (TransformerLens has a `stop_at_layer` argument for the same purpose; the
# exception works for any hook, including ones outside the blocks.)
#
# **Exercise: `stop_early_activations`.** Return the activation at `hook_name`, raising
# `StopForward` (imported from `sae_course.activations`) in the hook so that no later layer runs.
# One forward pass, and no hook left on the model: a hook that raises is exactly the kind that
# must not stay registered, or every later forward pass would stop there too.
#
# <details><summary>Hint</summary>
#
# The hook stores the activation, then `raise StopForward`; wrap `model.run_with_hooks(...)` in
# `try: ... except StopForward: pass` (run_with_hooks removes its hook either way).
# </details>

# %%
def stop_early_activations(model: Any, tokens: Tensor, hook_name: str) -> Tensor:
    """The activation at `hook_name` for `tokens`; the forward pass stops right after that hook."""
    # EXERCISE stop_early_activations
    storage: dict[str, Tensor] = {}

    def hook_fn(acts: Tensor, hook: Any) -> None:
        storage["acts"] = acts.detach()
        raise StopForward

    try:
        model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook_fn)])
    except StopForward:
        pass
    return storage["acts"]
    # END EXERCISE


# %%
checks.activations.test_stop_early_activations(stop_early_activations)

# %% [markdown]
# How much does it save? The cell below times the library's `harvest` (the same thing, with a
# check of the hook name) at `blocks.1.hook_resid_pre`, with and without the early stop.
#
# **Predict, then reveal.** Stopping there runs the embeddings and one block instead of every
# block plus the unembedding. About how much faster do you expect it to be?
#
# <details><summary>Reveal</summary>
#
# At least about twice as fast: the time of a forward pass is spread over the blocks, and the
# final unembedding (a product with the whole vocabulary at every position) adds to it. On the
# offline model (4 blocks) our runs measured 2 to 6 times; GPT-2 has 12 blocks, so there the
# saving is larger. The exact ratio depends on your machine and on what else runs on it (one
# timing is noisy; `benchmarks/harvest.py` measures it properly).
# </details>
#
# **Expect:** two times in milliseconds and their ratio, the early stop several times faster.

# %%
early_hook = "blocks.1.hook_resid_pre"
bench_tokens = plot_tokens[: settings.scale(ci=4, laptop=16, gpu=32)]
timings = {}
for stop in (False, True):
    acts_lib.harvest(model, bench_tokens, early_hook, stop_early=stop)  # warm up
    start = time.perf_counter()
    out = acts_lib.harvest(model, bench_tokens, early_hook, stop_early=stop)
    timings[stop] = time.perf_counter() - start
print(f"{early_hook}: full forward {timings[False] * 1e3:.1f} ms, stopped early {timings[True] * 1e3:.1f} ms "
      f"({timings[False] / timings[True]:.1f}x faster)")

# %% [markdown]
# ## 5. From text to contexts, from contexts to tokens
#
# The store feeds the model **contexts** of a fixed length (128 tokens for the public GPT-2
# SAEs). Documents are tokenised, joined into one stream with the end-of-text token after each
# one, cut into pieces of `context_len - 1` tokens, and each piece gets a BOS in front. Every
# context then looks like what the model saw in training: it starts with BOS, and a document
# boundary is marked. The last, partial piece is dropped rather than padded (padding would
# feed the SAE activations of pad tokens).
#
# **Exercise: `pack_contexts`.** Build the `[n_contexts, context_len]` tensor of token ids.
# Use the `bos_id` you are given (models differ), and do not change the caller's lists.
#
# <details><summary>Hint</summary>
#
# `stream.extend(doc); stream.append(bos_id)` for each document; keep
# `n = len(stream) // (context_len - 1)` pieces, `reshape(n, context_len - 1)`, and `torch.cat` a
# column of `bos_id` in front.
# </details>

# %%
def pack_contexts(token_lists: list[list[int]], context_len: int, bos_id: int) -> Tensor:
    """Documents (lists of token ids) -> [n, context_len] long tensor, each row starting with bos_id.

    Join the documents into one stream with bos_id after each document, cut it into pieces of
    context_len - 1 tokens (dropping the incomplete last piece), and put bos_id in front of each.
    """
    # EXERCISE pack_contexts
    stream: list[int] = []
    for doc in token_lists:
        stream.extend(doc)
        stream.append(bos_id)
    body = context_len - 1
    n = len(stream) // body
    chunks = torch.tensor(stream[: n * body], dtype=torch.long).reshape(n, body)
    return torch.cat([torch.full((n, 1), bos_id, dtype=torch.long), chunks], dim=1)
    # END EXERCISE


# %%
checks.activations.test_pack_contexts(pack_contexts)

# %% [markdown]
# The model returns activations `[batch, pos, d_model]`; an SAE trains on single vectors.
#
# **Exercise: `flatten_activations`.** Turn `[batch, pos, d]` into `[tokens, d]`, in
# (context, position) order, dropping position 0 (BOS) of every context when `exclude_bos`.
# Keep the dtype.
#
# <details><summary>Hint</summary>
#
# Slice the position dimension (`acts[:, 1:]`) before reshaping to `(-1, d)`.
# </details>

# %%
def flatten_activations(acts: Tensor, exclude_bos: bool = True) -> Tensor:
    """[batch, pos, d] -> [batch * pos, d] (or [batch * (pos - 1), d] without the BOS positions)."""
    # EXERCISE flatten_activations
    if exclude_bos:
        acts = acts[:, 1:]
    return acts.reshape(-1, acts.shape[-1])
    # END EXERCISE


# %%
checks.activations.test_flatten_activations(flatten_activations)

# %% [markdown]
# ## 6. Why the activations are shuffled
#
# Tokens of one context are **strongly correlated**: the same topic, the same entities, and a
# residual stream that changes slowly from one position to the next. A batch made of a few whole
# contexts is therefore much less diverse than a batch of random tokens, and its gradient is
# biased toward what those contexts happen to be about. So SAE training (Bricken et al. 2023,
# Cunningham et al. 2023) draws activations from many contexts and shuffles them. The cell below
# measures it on centred activations at the middle layer: the mean cosine similarity of tokens
# next to each other in a context, and of random pairs of tokens.
#
# **Predict, then reveal.** Which is larger, and by how much: near 0 for both, or a clear gap?
#
# <details><summary>Reveal</summary>
#
# Neighbours are more alike. Random pairs sit near 0 (the vectors are centred, so two unrelated
# tokens point in unrelated directions); neighbours stay clearly above it (on the offline model
# about 0.1 or more). A batch of unshuffled tokens would be full of such near-duplicates, which
# is why the store shuffles.
# </details>
#
# **Expect:** the two mean cosines: neighbours clearly above 0, random pairs close to 0.

# %%
layer = cfg.n_layers // 2
hook_name = f"blocks.{layer}.hook_resid_pre"
mid = acts_lib.harvest(model, plot_tokens, hook_name)[:, 1:]  # without BOS
mid = mid - mid.mean(dim=(0, 1))  # cosine of the centred vectors
neighbours = torch.cosine_similarity(mid[:, 1:], mid[:, :-1], dim=-1).mean()
flat = mid.reshape(-1, mid.shape[-1])
perm = torch.randperm(len(flat), generator=torch.Generator().manual_seed(settings.seed))
random_pairs = torch.cosine_similarity(flat, flat[perm.to(flat.device)], dim=-1).mean()
print(f"{hook_name}: mean cosine of neighbouring tokens {neighbours:.3f}, of random pairs {random_pairs:.3f}")

# %% [markdown]
# Shuffling the whole dataset would need it all in memory. The store instead keeps a
# **shuffle buffer** of a fixed size: it fills the buffer with activations from many contexts,
# shuffles it, serves **half** of it as training batches, keeps the other half, and refills
# when it is half empty. Each kept activation gets mixed with the next fill, so batches mix
# contexts harvested at different times, and memory stays bounded however many tokens you train on.
#
# **Exercise: `refill_and_split`.** One step of the buffer: pool = `cat([buffer, new])`,
# permute it with `torch.randperm(len(pool), generator=generator)` (use the generator, so a
# seed fixes the order), serve the first `(len(pool) // 2) // batch_size` full batches, keep the rest.
# Leave `buffer` and `new` as they are (build new tensors) and keep their dtype.
#
# <details><summary>Hint</summary>
#
# `pool = pool[torch.randperm(len(pool), generator=generator)]`; with
# `served = n_batches * batch_size`, the batches are `pool[:served].reshape(n_batches,
# batch_size, d)` and the rest is `pool[served:]`.
# </details>

# %%
def refill_and_split(
    buffer: Tensor, new: Tensor, batch_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Mix `new` into the buffer, shuffle, and serve half of it as batches.

    pool = cat([buffer, new]), permuted by torch.randperm with `generator`; the first
    (len(pool) // 2) // batch_size full batches are served, the rest is kept.
    Returns (batches [n_batches, batch_size, d], kept [rest, d]).
    """
    # EXERCISE refill_and_split
    pool = torch.cat([buffer, new])
    pool = pool[torch.randperm(len(pool), generator=generator)]
    n_batches = (len(pool) // 2) // batch_size
    served = n_batches * batch_size
    return pool[:served].reshape(n_batches, batch_size, pool.shape[-1]), pool[served:]
    # END EXERCISE


# %%
checks.activations.test_refill_and_split(refill_and_split)

# %% [markdown]
# ## 7. Normalising the activations
#
# The residual norm differs by orders of magnitude between layers (section 3) and between
# models. An SAE's loss mixes a reconstruction error, which scales with the norm squared, and a
# sparsity penalty, which scales with the norm (L1) or not at all (TopK). So the right sparsity
# coefficient and learning rate would depend on the layer. A common fix (Anthropic's later SAE
# work; SAELens's `normalize_activations="expected_average_only_in"`): multiply
# all activations by one constant chosen so that their **mean norm is sqrt(d_in)**, estimated
# once from some batches, and kept. Dividing by the same constant undoes it, e.g. before a
# reconstruction is put back into the model.
#
# Why "estimated from some batches"? When training starts the activations do not exist yet: they
# are made batch by batch, each batch costing forward passes of the model. So the store draws
# the first few batches, measures them, and keeps the factor for all that follows.
#
# **Exercise: `estimate_norm_scale_factor`.** Estimate the factor `sqrt(d) / mean token norm`
# from the first `n_batches` batches `[tokens, d]` of `batches`:
#
# - `batches` may be a list or a one-shot iterator (a generator, a store) whose batches cost
#   forward passes: draw exactly `n_batches` of them, not one more;
# - keep a running sum of the token norms and a count of the tokens as the batches come, so
#   memory stays at one batch (nothing concatenated). Batches may differ in size, and every
#   token counts the same;
# - raise a `ValueError` saying what is wrong when fewer than `n_batches` batches come, or when a
#   batch's width `d` differs from the first batch's (activations of two different hooks);
# - return a 0-dimensional tensor of the activations' dtype. Only compute it: scaling is the
#   caller's job.
#
# <details><summary>Hint</summary>
#
# `islice(batches, n_batches)` (imported from `itertools` at the top) stops after `n_batches`
# without drawing another; `enumerate` with a `break` draws one more before it stops, and
# slicing works on a list only. Keep three numbers as the batches come: the sum of the token
# norms, the number of tokens, and the number of batches seen (to tell afterwards whether there
# were too few); remember the first batch's width to compare the others with. The mean norm is
# the sum over the token count. Start the sum at `0.0` and add tensors to it: the result is then
# a tensor of the batches' dtype.
# </details>

# %%
def estimate_norm_scale_factor(batches: Iterable[Tensor], n_batches: int) -> Tensor:
    """sqrt(d) / mean L2 norm of the tokens in the first `n_batches` batches [tokens, d].

    Draws exactly n_batches batches, with a running sum of norms and a count of tokens;
    ValueError when fewer come or a batch's d differs from the first's. A 0-dim tensor of the
    activations' dtype.
    """
    # EXERCISE estimate_norm_scale_factor
    total, count, seen, d = 0.0, 0, 0, None
    for batch in islice(batches, n_batches):
        if d is None:
            d = batch.shape[-1]
        elif batch.shape[-1] != d:
            raise ValueError(f"batch {seen} has width {batch.shape[-1]}, the first had {d}")
        total = total + batch.norm(dim=-1).sum()
        count += batch.shape[0]
        seen += 1
    if seen < n_batches:
        raise ValueError(f"asked for {n_batches} batches, only {seen} came")
    return math.sqrt(d) / (total / count)
    # END EXERCISE


# %%
checks.activations.test_estimate_norm_scale_factor(estimate_norm_scale_factor)

# %% [markdown]
# With the library's version, at three depths: the activations of the contexts above (BOS
# left out) in batches of 64 tokens, and the factor estimated from the first 2 batches and from
# all of them. Each depth gets its own factor. With the factor from all the batches the mean
# norm is exactly sqrt(d_model); with the one from 2 batches it is a few percent off, close
# enough for the purpose (hyperparameters that transfer); the store estimates from more tokens
# (its `n_norm_tokens`).
#
# **Expect:** three rows with mean norms from about 1.5 to about 200; in each, the factor from 2
# batches and from all, at most 6% apart; the normalised mean norm with the factor from all
# exactly sqrt(d) (13.86 for d = 192), with the one from 2 batches within 6% of it.

# %%
for depth_i in sorted({0, cfg.n_layers // 2, cfg.n_layers}):
    x = acts_lib.flatten_activations(resid[depth_i])
    x_batches = x.split(64)  # the last batch may be smaller
    c_few = acts_lib.estimate_norm_scale_factor(x_batches, n_batches=2)
    c_all = acts_lib.estimate_norm_scale_factor(x_batches, n_batches=len(x_batches))
    print(f"resid depth {depth_i:2d}: mean norm {x.norm(dim=-1).mean():7.2f}  factor from 2 batches "
          f"{c_few:.4f}, from all {len(x_batches)} {c_all:.4f} ({c_few / c_all - 1:+.1%})  normalised "
          f"mean norm {(c_few * x).norm(dim=-1).mean():.2f} / {(c_all * x).norm(dim=-1).mean():.2f}  "
          f"(sqrt(d) = {math.sqrt(cfg.d_model):.2f})")

# %% [markdown]
# ## 8. The activation store
#
# `sae_course.activations.ActivationStore` puts the pieces together: contexts from
# `sae_course.text`, `harvest` with the early stop, `flatten_activations` without BOS, the shuffle
# buffer (its size is a memory budget, `buffer_mb`), the normalisation (kept as
# `store.scale_factor`, undone by `store.unnormalize`), a progress bar, and optionally a disk
# cache: with `cache_dir`, activations are written as safetensors shards and the next run with the
# same model, hook, data and seed reads them instead of running the model. A different key
# (another hook, other data, another seed) gets its own folder, so a stale cache is never used.
# Mind the disk: 4 bytes × d_in per token, 3 KB for GPT-2, so a million tokens take 3 GB.
# Notebook 04 trains an SAE from exactly this.
#
# The store does not call `refill_and_split` itself. It follows the same rule (when the buffer
# is full, serve a random half of it in batches and keep the other half), but in place, inside
# one tensor allocated once: `refill_and_split` builds the pool with `torch.cat` and then a
# shuffled copy of it, so for a moment it holds the buffer two or three times over. The store's
# kept half sits in its original order rather than shuffled, which changes nothing, since every
# serve draws a fresh permutation of the whole buffer. So the store gives batches of the same
# kind, not the same batches as your function would.
#
# **Expect:** a progress bar while the store fills, its buffer size and scale factor, then the
# batches it served: their shape, the forward passes it ran, and a mean norm near sqrt(d).

# %%
n_contexts = settings.scale(ci=48, laptop=500, gpu=2_000)
context_len = settings.scale(ci=64, laptop=128, gpu=128)
contexts = text_lib.contexts_for_model(model, n_contexts, context_len, seed=settings.seed, source=source)
cache_dir = tempfile.mkdtemp(prefix="sae_course_acts_")
store_kwargs = dict(
    batch_size=settings.scale(ci=128, laptop=4096, gpu=4096),
    # ci: a buffer of 8 batches (so it refills several times); else a memory budget in MB
    buffer_mb=settings.scale(ci=8 * 128 * 4 * cfg.d_model / 2**20, laptop=64.0, gpu=512.0),
    model_batch_size=settings.scale(ci=8, laptop=32, gpu=64),
    normalize=True,
    cache_dir=cache_dir,
    seed=settings.seed,
)
store = ActivationStore(model, contexts, hook_name, **store_kwargs)
print(f"buffer holds {store.buffer_tokens} activations; scale factor {float(store.scale_factor):.4f}")
start = time.perf_counter()
batches = list(store)
first_run = time.perf_counter() - start
print(f"{len(batches)} batches of {tuple(batches[0].shape)}, {store.forward_passes} forward passes, "
      f"{first_run:.2f} s; largest buffer {store.peak_buffer_tokens} tokens")
print(f"mean norm of a batch: {batches[0].norm(dim=-1).mean():.2f} (sqrt(d) = {math.sqrt(store.d_in):.2f})")

# %% [markdown]
# A second store with the same key reads the cache: no forward pass, the same batches in the same
# order. Undoing the normalisation gives back the model's own activations.
#
# **Expect:** 0 forward passes, identical batches, the model-unit norm of this hook (about 90
# on the offline model) and an exact round trip.

# %%
again = ActivationStore(model, contexts, hook_name, **store_kwargs)
start = time.perf_counter()
batches_again = list(again)
print(f"second run: {again.forward_passes} forward passes, {time.perf_counter() - start:.2f} s, "
      f"identical batches: {all(torch.equal(a, b) for a, b in zip(batches, batches_again, strict=True))}")
raw = again.unnormalize(batches_again[0])
print(f"mean norm in model units: {raw.norm(dim=-1).mean():.2f}; "
      f"round trip exact to {(again.normalize(raw) - batches_again[0]).abs().max():.1e}")
shutil.rmtree(cache_dir)  # a demo cache; for real runs pass a folder you keep

# %% [markdown]
# ## 9. A first look inside: what a straight line can read
#
# Before training an SAE on these activations, ask a simpler question: is a factor of the text
# **linearly readable** from the residual stream at all? A *linear probe* is a logistic
# regression from the activation of one token to a label; if it predicts the label on stories
# it never saw, the model has written that factor somewhere along a direction (or a few). This
# is the first interpretability result on a real language model in the course, and the ceiling
# Part 05 compares SAE latents with: a latent cannot tell us more about a factor than the best
# line through the same activations (Alain & Bengio 2016, *Understanding intermediate layers
# using linear classifier probes*, [arXiv 1610.01644](https://arxiv.org/abs/1610.01644)).
#
# StoryWorld makes this exact, because every token carries its story's labels.
# `storyworld.labelled_contexts` packs stories into contexts just as the store does, with a label
# dict per token; `probing.probe_story_factors` fits one probe per factor and layer and scores it
# on held-out stories (whole stories are held out, so the probe cannot memorise one). GPT-2 reads
# StoryWorld as plain English, so this runs on both models.
#
# **Predict, then reveal.** Which factor do you expect to be readable earliest: the topic
# (cooking, sailing...), the subtopic (baking vs soups), the sentiment, or the tense? And will
# any of them reach an accuracy of 1?
#
# <details><summary>Reveal</summary>
#
# Topic words are in almost every sentence and each names its topic, so a token that attends
# to earlier words can tell the topic almost at once: expect topic and subtopic to be readable
# from the first blocks. Sentiment and tense are shown by fewer words. None reaches 1 on all
# tokens (the dashed curves): the first tokens of a story come before any word that shows its
# factors, and every token of a story carries the story's label. The solid curves keep only the
# tokens after a word that shows the factor. Compare with the numbers below: the expectation
# for the topic turns out to be too optimistic.
# </details>
#
# **Expect:** progress bars, a figure of probe accuracy by layer for each factor (solid:
# tokens after a word that shows it; dashed: all tokens), and a table in which every factor's
# best probe beats its chance level.

# %%
n_probe = settings.scale(ci=48, laptop=160, gpu=256)
probe_ctx = sw.labelled_contexts(model.tokenizer, n_probe, context_len=min(128, cfg.n_ctx),
                                 seed=settings.seed + 1)
probe_resid = torch.cat([acts_lib.residual_stream(model, batch).cpu()  # [layers, batch, pos, d]
                         for batch in tqdm(probe_ctx.tokens.split(16), desc="residual stream")],
                        dim=1)
layer_names = acts_lib.residual_hook_names(cfg.n_layers)
probe_all = probing.probe_story_factors(probe_resid, layer_names, probe_ctx)
probe_shown = probing.probe_story_factors(probe_resid, layer_names, probe_ctx, after_shown=True)
del probe_resid

fig, ax = plt.subplots(figsize=(7.5, 4))
for factor in sw.STORY_FACTORS:
    shown = [r for r in probe_shown if r.factor == factor]
    every = [r for r in probe_all if r.factor == factor]
    line, = ax.plot(range(len(shown)), [r.accuracy for r in shown], "o-", label=factor)
    ax.plot(range(len(every)), [r.accuracy for r in every], "--", color=line.get_color(),
            alpha=0.5, lw=1)
ax.set_xticks(range(len(layer_names)), [n.replace(".hook_", "\n") for n in layer_names], fontsize=8)
ax.set(ylabel="held-out accuracy", ylim=(0, 1.02),
       title="Linear probes: after the story showed the factor (solid), all tokens (dashed)")
ax.legend(fontsize=8, loc="lower right")
plt.tight_layout()
plt.show()
print("factor     best layer (after shown)       accuracy  chance  |  all tokens there")
for factor in sw.STORY_FACTORS:
    best = max((r for r in probe_shown if r.factor == factor), key=lambda r: r.accuracy)
    every = next(r for r in probe_all if r.factor == factor and r.layer == best.layer)
    print(f"{factor:10s} {best.layer:30s} {best.accuracy:.3f}     {best.chance:.3f}   |  "
          f"{every.accuracy:.3f} (chance {every.chance:.3f})")

# %% [markdown]
# What the offline model shows (read it off the plot and the table above): the embeddings alone
# (`blocks.0`) know little, and each factor becomes readable after one or two blocks, once
# attention has looked back at the words that show it. Sentiment is the most readable, above 0.8
# at `blocks.2` on the tokens after the story showed it. Topic and subtopic are far above chance,
# yet on the tokens after the story showed them a straight line reads them right only about half
# the time (between 0.4 and 0.7; lower on all tokens), although
# the model predicts topic words without a single mistake (its model card). So the model does
# not keep the story's topic written along one fixed direction at every token; it fetches it
# from earlier words where the next word needs it. Keep this in mind for notebook 05: a factor
# that no single direction holds will not be one SAE latent either.
#
# On GPT-2, StoryWorld is simple English far from its training text; expect other curves, and
# a slower run (twelve layers of 768 dimensions).

# %% [markdown]
# ## Summary
#
# - TransformerLens 4 loads GPT-2 (or the offline model) as a `TransformerBridge`; compatibility
#   mode makes its activations match what public SAEs were trained on.
# - Hooks read any activation by name; the residual stream is `blocks.{L}.hook_resid_pre`, its
#   norm grows with depth; BOS (the same vector in every context, and a huge outlier on GPT-2)
#   is left out.
# - A hook that raises after capturing stops the forward pass early: no wasted layers.
# - Contexts start with BOS; activations are flattened, shuffled in a bounded buffer (tokens of
#   a context are correlated) and scaled to a mean norm of sqrt(d_in) (so hyperparameters
#   transfer), by one factor estimated from the first batches and kept.
# - A linear probe says which factors the residual stream already holds along a direction, and
#   from which layer: the ceiling against which notebook 05 grades SAE latents.
#
# Next, notebook 04 trains an SAE on batches from this store and measures it: L0, explained
# variance, and the language-model loss when the SAE's reconstruction replaces the activations.
