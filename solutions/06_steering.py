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
# # 06 · Steering with features, measured against its cost
#
# Notebook 05 read what the SAE's latents mean. This one *uses* them: add a latent's decoder
# direction to the residual stream while the model writes, and the text should turn toward
# what the latent stands for. That is steering, and it is the part of SAE work shown least
# honestly: a few hand-picked samples judged by eye, no price tag, and in one popular
# tutorial a hook that only ever steers the prompt, never the words the model goes on to
# write.
#
# StoryWorld lets us do better. Its scorers say what any text is about (topic, sentiment,
# tense) and whether its sentences are well formed, so every steered continuation gets a
# score, and the cost of steering (how much worse the model predicts ordinary text while
# the intervention is on) is one more number. Then SAE steering can be compared with the
# simple alternatives on one axis, with the strength chosen on some prompts and the result
# reported on others.
#
# You will write 9 pieces, each followed by a check cell:
#
# 1. `steer`: add alpha times a direction at every position but BOS, cached steps included;
# 2. `clamp_latents`: set SAE latents to a value and keep the SAE's error term;
# 3. `ablation_effect`: the true effect of zeroing one latent on a metric;
# 4. `latent_attribution`: activation times gradient, the one-pass estimate of that effect;
# 5. `success_rate`: how often steered text is about the target;
# 6. `steering_cost`: the CE increase and KL the intervention causes on held-out text;
# 7. `difference_of_means`: the simplest steering direction there is;
# 8. `choose_strength`: pick the strength on training prompts (and only there);
# 9. `pareto_front`: the methods' best trade-offs between success and cost.
#
# Every demonstration uses the course library (`sae_course.steering`,
# `sae_course.steering_eval`, `sae_course.attribution`, `sae_course.playground`), so if you are
# stuck on one exercise you can still run the rest.
#
# Reading: Templeton et al. 2024, *Scaling Monosemanticity*
# ([transformer-circuits.pub/2024/scaling-monosemanticity](https://transformer-circuits.pub/2024/scaling-monosemanticity/))
# for clamping features with the error term kept; Turner et al. 2023, *Activation Addition*
# ([arXiv 2308.10248](https://arxiv.org/abs/2308.10248)) and Marks & Tegmark 2023 on
# difference-of-means directions ([arXiv 2310.06824](https://arxiv.org/abs/2310.06824)); Wu et
# al. 2025, *AxBench* ([arXiv 2501.17148](https://arxiv.org/abs/2501.17148)); Arad, Mueller &
# Belinkov 2025, *SAEs Are Good for Steering, If You Select the Right Features*
# ([arXiv 2505.20063](https://arxiv.org/abs/2505.20063)); Marks et al. 2024, *Sparse Feature
# Circuits* ([arXiv 2403.19647](https://arxiv.org/abs/2403.19647)) for attribution; Huang et
# al. 2024, *RAVEL* ([arXiv 2402.17700](https://arxiv.org/abs/2402.17700)) for cause and
# isolation in fact editing.

# %% tags=["setup"]
import math
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from sae_course import attribution as attr
from sae_course import checks, pretrained
from sae_course import steering as st
from sae_course import steering_eval as se
from sae_course.evaluation import kl_divergence, next_token_loss
from sae_course.models import load_model
from sae_course.playground import steering_playground
from sae_course.plotting import plot_steering_curves
from sae_course.sae import SAE
from sae_course.settings import get_settings, seed_everything
from sae_course.steering_eval import SteeringPoint
from sae_course.storyworld import WORLD

settings = get_settings()
seed_everything(settings.seed)
print(settings)

# %% [markdown]
# ## 1. The model, the SAE and the prompts
#
# **Why.** Steering needs three things: a model, directions in its residual stream, and
# prompts that leave the model free to go anywhere. We use the offline StoryWorld model and
# the main SAE of the shipped suite (TopK, 1536 latents, k = 16, on `blocks.2.hook_resid_pre`).
# A *neutral prompt* is the opening of a StoryWorld story up to its last whole sentence
# before any topic or sentiment word: "Mara is a teacher. Mara lives in Guayaquil, in
# Ecuador." Its continuation may go to any of the 8 topics. The prompts come in two sets
# from different story seeds, one to tune on and one to report on (section 6 says why), and
# the cost of an intervention is measured on held-out StoryWorld text of its own.
#
# The model is tiny (4 layers, width 192), so on a CPU it runs fastest on one thread: more
# threads only wait for each other.
#
# **Expect:** the sizes of each set, and the mean norm of a residual vector at the hook,
# which is the unit every steering strength below is measured in.

# %%
if settings.device.type == "cpu":
    torch.set_num_threads(1)
model = load_model("offline")  # StoryWorld's scorers judge StoryWorld text only
RELEASE = "storyworld-res"
main = next(p for p in pretrained.list_pretrained(RELEASE) if p.role == "main")
sae = pretrained.load_pretrained(RELEASE, main.sae_id)
hook_name = main.hook_name
data = se.steering_data(
    model, sae, n_prompts=settings.scale(ci=8, laptop=24, gpu=48),
    n_contexts=settings.scale(ci=32, laptop=64, gpu=128),
    n_cost=settings.scale(ci=6, laptop=12, gpu=32), cost_len=64,
    new_tokens=settings.scale(ci=12, laptop=20, gpu=24))
norm = data.resid_norm
print(f"{len(data.train_prompts)} training prompts, {len(data.test_prompts)} test prompts, "
      f"{data.new_tokens} new tokens each; cost on {tuple(data.test_cost_tokens.shape)} tokens")
print(f"mean residual norm at {hook_name}: {norm:.1f}")
print("a neutral prompt:", data.test_prompts[0])

# %% [markdown]
# ## 2. A steering hook that steers what the model writes
#
# **Why.** A steering vector is added to the residual stream at one hook: x becomes
# x + alpha * v. To steer generated text it must be added while the model *generates*, and
# TransformerLens 4's `model.generate` keeps a KV cache: the first forward pass sees the
# whole prompt, `[batch, prompt_len, d]`, and every later pass sees only the newest token,
# `[batch, 1, d]`. A hook that indexes absolute positions, or that acts only when it sees
# more than one position, steers the prompt and then silently leaves every generated token
# alone. The BOS token is never steered: it is the same in every text, and the model uses
# it as an attention sink.
#
# **Your turn.** `steer(resid, not_bos, direction, alpha)` gets the activations of one pass,
# `[batch, pos, d]` (pos may be 1), a bool mask `[batch, pos]` that is False at BOS (and at
# left padding), a direction `[d]` and a float; it returns a new tensor, `resid` plus
# `alpha * direction` where `not_bos` is True, in `resid`'s dtype.
#
# <details><summary>Hint</summary>
#
# Broadcast: the mask needs a last axis of size 1 to multiply a `[d]` vector, and the
# direction needs `.to(resid.dtype)`. Do not branch on `resid.shape[1]`: one rule serves
# the prompt pass and the cached steps.
# </details>

# %%
def steer(resid: Tensor, not_bos: Tensor, direction: Tensor, alpha: float) -> Tensor:
    """resid + alpha * direction at every position where not_bos is True."""
    # EXERCISE steer
    step = alpha * direction.to(device=resid.device, dtype=resid.dtype)
    return resid + step * not_bos[..., None].to(resid.dtype)
    # END EXERCISE


# %%
checks.steer.test_steer(steer)
checks.steer.test_steer_in_generation(steer)

# %% [markdown]
# The library's `st.AddDirection` does the same inside a hook (it finds BOS from the token
# ids and position ids of the pass). Here is what goes wrong without the cached steps. The
# direction is the decoder row of the latent with the best output score for *cooking*
# (section 8 explains that score); the broken hook below acts only on passes of more than
# one position, as the popular tutorial's does.
#
# **Predict, then reveal.** With the broken hook, will the continuations be about cooking
# as often as with the correct one, about half as often, or hardly more than without
# steering?
#
# <details><summary>Answer</summary>
#
# Hardly more than without steering. The prompt's residual stream is steered, so the first
# new token is chosen from a steered forward pass and may be a cooking word; from the second
# token on, every pass holds one new token, the hook does nothing, and the model reads the
# steered prompt only through the keys and values cached at layer 2 and above, which carry
# much less of the push than the residual stream itself. The rest of the text is the model's
# own.
# </details>

# %%
class PromptOnly(st.AddDirection):
    """The bug: act only on a pass that holds more than one position."""

    def _replacement(self, x: Tensor) -> Tensor:
        return super()._replacement(x) if x.shape[1] > 1 else x


n_candidates = settings.scale(ci=48, laptop=192, gpu=1536)
cooking_output = se.target_output_scores(data, "topic", "cooking", n_candidates)
cook_latent = se.best_latent(cooking_output)
v = se.unit(sae.W_dec[cook_latent].detach())
alpha = 0.5 * norm
for name, interventions in (("no steering", []),
                            ("prompt-only hook", [PromptOnly(model, hook_name, v, alpha)]),
                            ("every position", [st.AddDirection(model, hook_name, v, alpha)])):
    conts = st.continuations(model, data.test_prompts, data.new_tokens, interventions, seed=0)
    texts = [model.tokenizer.decode(c) for c in conts]
    print(f"{name:17s} cooking {st.success_rate(texts, 'topic', 'cooking'):.2f}   "
          f"e.g. {texts[1][:70]!r}")

# %% [markdown]
# ## 3. Clamping a latent, and ablating one
#
# **Why.** Adding a decoder row pushes by the same amount on every token. Clamping is the
# SAE's own way (Templeton et al. 2024): encode the residual, set latent i to a value,
# decode, and add back the SAE's error x - x_hat. Without the error term the block's output
# would be the SAE's reconstruction, so *every* token would lose what the SAE misses, and
# part of the "effect" would be that loss. With it the only change to x is
# (value - z_i) * W_dec[i]. Ablation is the same edit with the value 0: it removes what
# the latent wrote, where it fired.
#
# **Your turn.** `clamp_latents(x, sae, latents, value)` gets activations `[..., d]`, an SAE,
# a list of latent indices and a float; it returns x with those latents set to `value`, the
# error term kept. Use `sae.encode` and `sae.decode`.
#
# <details><summary>Hint</summary>
#
# Encode once and keep z; edit a *copy* of z (`z.clone()`, then index its last axis with
# the list); return decode(edited) plus (x - decode(z)).
# </details>

# %%
def clamp_latents(x: Tensor, sae: SAE, latents: list[int], value: float) -> Tensor:
    """x with `latents` of the SAE set to `value`, the SAE's error term added back."""
    # EXERCISE clamp_latents
    z = sae.encode(x)
    edited = z.clone()
    edited[..., latents] = value
    return sae.decode(edited) + (x - sae.decode(z))
    # END EXERCISE


# %%
checks.steer.test_clamp_latents(clamp_latents)

# %% [markdown]
# The library's `st.clamp(model, sae, latent, value)` puts this edit at the SAE's hook (BOS
# left alone), and `st.ablate(model, sae, latents)` sets them to 0.
#
# A behaviour to measure an ablation on: StoryWorld's characters have fixed facts, and after
# "Mara lives in" the model names her city. The metric is the logit of her city minus the
# mean logit of the other cities (`attr.answer_metric`): large when the model is sure.
#
# **Your turn.** `ablation_effect(model, sae, tokens, metric, latent)` returns
# M(clean) - M(latent zeroed), where M is `metric(logits)`, the latent zeroed at every
# position but BOS with the error term kept. Run the model at most twice, and leave no hook
# on it: `model.run_with_hooks(tokens, fwd_hooks=[(hook_name, fn)])` removes its hooks when
# it returns, even when a hook raises. The SAE's hook name is `sae.cfg.extra["hook_name"]`.
#
# <details><summary>Hint</summary>
#
# A hook function takes `(activation, hook)` and returns the new activation. Inside it,
# ablate with the function you just wrote (`clamp_latents(..., [latent], 0.0)`), then put
# back position 0 (BOS) from the input: `out[:, 0] = x[:, 0]`.
# </details>

# %%
def ablation_effect(model, sae: SAE, tokens: Tensor, metric: Callable[[Tensor], Tensor],
                    latent: int) -> float:
    """M(clean) - M(latent zeroed at every position but BOS, error term kept)."""
    # EXERCISE ablation_effect
    def ablate(x: Tensor, hook) -> Tensor:
        z = sae.encode(x)
        edited = z.clone()
        edited[..., latent] = 0.0
        out = sae.decode(edited) + (x - sae.decode(z))
        out[:, 0] = x[:, 0]
        return out

    hook_name = sae.cfg.extra["hook_name"]
    clean = metric(model(tokens))
    ablated = metric(model.run_with_hooks(tokens, fwd_hooks=[(hook_name, ablate)]))
    return float(clean - ablated)
    # END EXERCISE


# %%
checks.steer.test_ablation_effect(ablation_effect)

# %% [markdown]
# ## 4. Attribution: which latents carry a fact, in one backward pass
#
# **Why.** Ablating latents one at a time costs a forward pass each; 1536 of them, on every
# prompt, adds up. Attribution estimates all of them at once (Marks et al. 2024): splice the
# SAE in with its error term *detached*, x = x_hat + (x - x_hat).detach(), so the forward
# pass is exactly the clean one but the gradient of the metric reaches every latent z_i
# through the decoder. Zeroing latent i changes x by -z_i W_dec[i], so to first order the
# metric drops by z_i * dM/dz_i, summed over positions.
#
# **Your turn.** `latent_attribution(x, sae, downstream)` gets one prompt's activations at
# the hook `[pos, d]`, an SAE and a function `downstream` that maps activations `[pos, d]`
# to the scalar metric (the rest of the model); it returns `[d_sae]`, activation times
# gradient summed over positions.
#
# <details><summary>Hint</summary>
#
# z = `sae.encode(x)`, detached, then `.requires_grad_(True)`; rebuild x from `sae.decode(z)`
# plus the detached error; one `torch.autograd.grad(metric, z)`. If every attribution comes
# out 0, the error term was not detached: then x_hat + error is x whatever z is.
# </details>

# %%
def latent_attribution(x: Tensor, sae: SAE, downstream: Callable[[Tensor], Tensor]) -> Tensor:
    """Activation x gradient of downstream(x) for every latent, summed over positions."""
    # EXERCISE latent_attribution
    with torch.enable_grad():
        z = sae.encode(x).detach().requires_grad_(True)
        x_hat = sae.decode(z)
        metric = downstream(x_hat + (x - x_hat).detach())
        (grad,) = torch.autograd.grad(metric, z)
    return (z * grad).sum(0).detach()
    # END EXERCISE


# %%
checks.steer.test_latent_attribution(latent_attribution)

# %% [markdown]
# The library's `attr.attribute` does this on the whole model, and `attr.check_attribution`
# compares it with the true effect of ablating each of the top 20 latents, one at a time,
# on the city fact of a few characters (4 prompts each).
#
# **Predict, then reveal.** The attribution is a first-order estimate. Will it rank the top
# latents in the same order as their true ablation effects (correlation near 1), get the
# sign right but not the order (near 0.5), or fail (near 0)?
#
# <details><summary>Answer</summary>
#
# Mostly right: the correlations below are high. A latent's removal is a small change at
# layer 2 of 4, and the logit difference is a smooth function of it, so the linear estimate
# holds well; where it errs, it is on latents whose removal the later layers react to
# non-linearly (the largest effects are usually underestimated).
# </details>

# %%
names = ["Mara", "Tom"] if settings.budget == "ci" else ["Mara", "Tom", "Lena", "Omar"]
fig, axes = plt.subplots(1, len(names), figsize=(9.2, 2.8), squeeze=False)
for name, ax in zip(names, axes[0], strict=True):
    prompts = attr.fact_prompts(WORLD, name, "home")
    city = attr.fact_answer(WORLD, name, "home")
    found = attr.check_attribution(model, sae, prompts,
                                   attr.home_metrics(model, WORLD, city, prompts), n=20)
    ax.scatter(found.attribution, found.ablation, s=14)
    lim = float(max(found.attribution.abs().max(), found.ablation.abs().max())) * 1.1
    ax.plot([-lim, lim], [-lim, lim], color="gray", lw=0.8, ls="--")
    ax.set_title(f"{name} lives in {city}\nPearson {found.pearson:.2f}, "
                 f"Spearman {found.spearman:.2f}", fontsize=9)
    ax.set_xlabel("attribution (estimate)")
    print(f"{name}: Pearson {found.pearson:.2f}, Spearman {found.spearman:.2f}")
axes[0, 0].set_ylabel("ablation effect (true)")
fig.tight_layout()
plt.show()

# %% [markdown]
# **Expect:** points near the dashed diagonal (estimate = truth), a few latents with large
# effects and many near 0.
#
# ## 5. Fact editing: make Mara live somewhere else
#
# **Why.** If a handful of latents carry "Mara lives in Guayaquil", then switching them
# should move her, and nothing else about her should change. RAVEL (Huang et al. 2024)
# scores such an edit twice: *cause* (the new fact is said) and *isolation* (her other
# facts are not disturbed). The edit here (`attr.city_edit`): zero the 4 latents most
# attributed to her true city on her own prompts, and clamp the 4 latents most attributed to
# the new city, found on the prompts of characters who live there, to their typical value.
#
# **Expect:** cause and isolation before (1.0: the clean model states her facts) and after
# the edit, and the share of her pet prompts that still name *her* pet.

# %%
pairs = [("Mara", "Mombasa"), ("Lena", "Naples")]
for name, new_city in pairs:
    edit = attr.city_edit(model, sae, WORLD, name, new_city, k=4)
    result = attr.measure_edit(model, WORLD, name, new_city, edit.interventions(model, sae))
    home_prompt = attr.fact_prompts(WORLD, name, "home")[0]
    print(f"{name} -> {new_city}: cause {result.cause:.2f} (before {result.cause_before:.2f}), "
          f"isolation {result.isolation:.2f} (before {result.isolation_before:.2f}), pet name "
          f"kept {result.pet_name_kept:.2f}")
    print(f"   {home_prompt!r} -> {result.texts[home_prompt]!r}")

# %% [markdown]
# Both edits cause the new city and leave the job and the pet species alone: by RAVEL's two
# scores, perfect. Now read the continuations and the pet names. After "Mombasa." the next
# sentence is about Lena, who lives in Mombasa; after "Naples." it is about Omar, who lives
# in Naples, and Lena's pet prompts now name another pet. At layer 2 the latents that carry
# a character's city are largely the latents of who the character *is*, so the edit moves
# her by borrowing part of a neighbour's identity. Isolation measured only on the facts you
# thought to test is a weak test.
#
# ## 6. Measuring success and cost
#
# **Why.** A steering method is only as good as two numbers: how often the text becomes what
# we asked for, and what it costs the model to be pushed. Success here is the share of
# continuations a StoryWorld scorer assigns to the target: `st.SCORERS` has one per concept
# (`topic`, `subtopic`, `sentiment`, `tense`), each a function from text to a value or None
# (no verdict). A text with no verdict counts as a miss.
#
# **Your turn.** `success_rate(texts, scorer, target)`: the share of `texts` whose verdict is
# `target`; `float("nan")` for an empty list.

# %%
def success_rate(texts: Sequence[str], scorer: Callable[[str], str | None], target: str) -> float:
    """The share of texts the scorer assigns to target (nan when there are none)."""
    # EXERCISE success_rate
    if not texts:
        return float("nan")
    return sum(scorer(t) == target for t in texts) / len(texts)
    # END EXERCISE


# %%
checks.steer.test_success_rate(success_rate)

# %% [markdown]
# **Why cost.** Push hard enough and any direction "succeeds": the model writes cooking words
# in broken sentences. The cost is measured on held-out StoryWorld text (of every topic)
# with the intervention at every position: the increase in next-token cross-entropy (how
# much worse the model predicts real text), and the KL divergence from the clean model's
# next-token distribution to the steered one, KL(clean || steered), averaged over the
# predictions. The prediction made *at* a BOS position is left out (nothing was steered
# there), and the last position predicts nothing. Three more costs are measured on the
# continuations themselves: how likely the clean model finds them (perplexity), how much
# they repeat themselves (1 - distinct-2), and their share of well-formed sentences.
#
# **Your turn.** `steering_cost(clean_logits, steered_logits, tokens, bos_id)`: logits
# `[batch, pos, vocab]` of the same `tokens` `[batch, pos]`, clean and steered; return
# `(ce_increase, kl)`, each the mean over the predictions of positions 0..pos-2 whose token
# is not BOS. `next_token_loss(logits, tokens)` gives the loss of each prediction
# `[batch, pos - 1]`, and `kl_divergence(p_logits, q_logits)` gives KL(p || q) per position.
#
# <details><summary>Hint</summary>
#
# Position t predicts token t + 1, so the mask of counted predictions is
# `tokens[:, :-1] != bos_id`, and the KL is taken on `logits[:, :-1]`.
# </details>

# %%
def steering_cost(clean_logits: Tensor, steered_logits: Tensor, tokens: Tensor,
                  bos_id: int) -> tuple[float, float]:
    """(mean CE increase, mean KL(clean || steered)) over non-BOS predictions."""
    # EXERCISE steering_cost
    counted = tokens[:, :-1] != bos_id
    ce = next_token_loss(steered_logits, tokens) - next_token_loss(clean_logits, tokens)
    kl = kl_divergence(clean_logits[:, :-1], steered_logits[:, :-1])
    return float(ce[counted].mean()), float(kl[counted].mean())
    # END EXERCISE


# %%
checks.steer.test_steering_cost(steering_cost)

# %% [markdown]
# ## 7. Directions to compare
#
# **Why.** An SAE latent is one way to find a direction for a concept. The simplest other
# way needs labels and one line of code: the *difference of means*, the mean residual over
# tokens of stories about the target minus the mean over the rest (Turner et al. 2023 and
# Marks & Tegmark 2023 used it; AxBench found it the strongest detector of its concepts).
# A *probe direction* comes from a logistic regression trained to tell the two groups apart
# (notebook 03's probe): the direction in which its log-odds rise fastest. A *random
# direction* of the same norm is the control every method must beat. And a *prompt prefix*
# (sentences about the target written before the prompt) is the baseline that needs no
# access to the model's insides at all.
#
# **Your turn.** `difference_of_means(resid, mask)`: `resid` `[..., d]`, a bool `mask` of its
# leading shape; return mean(resid[mask]) - mean(resid[~mask]), `[d]`, in `resid`'s dtype.

# %%
def difference_of_means(resid: Tensor, mask: Tensor) -> Tensor:
    """mean of the rows where mask is True minus mean of the rest."""
    # EXERCISE difference_of_means
    flat = resid.reshape(-1, resid.shape[-1])
    m = mask.reshape(-1)
    return flat[m].mean(0) - flat[~m].mean(0)
    # END EXERCISE


# %%
checks.steer.test_difference_of_means(difference_of_means)

# %% [markdown]
# How alike are the directions? Cosine similarities between the four directions for
# *cooking* (the SAE row chosen by input score, section 8, is the latent that best detects
# cooking words):
#
# **Expect:** every cosine far below 1: the methods give different answers to "which
# direction is cooking?". The random direction's cosines are small, as any unrelated pair's
# are in 192 dimensions (typically about 1/sqrt(192), 0.07).

# %%
mask = data.label("topic=cooking")
directions = {
    "SAE row": sae.W_dec[se.best_latent(data.input_scores, "topic_word=cooking")].detach(),
    "diff. of means": st.difference_of_means(data.resid, mask),
    "probe": se.probe_direction(data.resid, mask),
    "random": st.random_direction(sae.W_dec[0].detach(), seed=0),
}
units = torch.stack([se.unit(d.float()) for d in directions.values()])
cos = units @ units.T
print(" " * 15 + "".join(f"{n:>15s}" for n in directions))
for n, row in zip(directions, cos, strict=True):
    print(f"{n:15s}" + "".join(f"{float(c):15.2f}" for c in row))

# %% [markdown]
# ## 8. Which latent? Input score and output score
#
# **Why.** The natural way to pick a latent for "cooking" is the one that fires on cooking
# words: the best F1 for the label `topic_word=cooking` (notebook 05). Arad, Mueller &
# Belinkov (2025) call that an *input* score and point out that a latent which *detects* a
# concept need not *produce* it: many latents respond to what was read, others drive what
# gets written. Their *output score* measures the second: add the latent's decoder row and
# see how much the next-token distribution moves toward the concept. They score a latent's
# own logit-lens tokens; StoryWorld knows each concept's words, so here the output score is
# the rise of the next-token probability of the target's words at the end of neutral
# training prompts, with the row added at half the residual norm (`se.output_scores`).
#
# **Predict, then reveal.** Will the latents with the best input scores for cooking also have
# the best output scores?
#
# <details><summary>Answer</summary>
#
# No: the scatter below shows high input and high output scores rarely in the same latent,
# as Arad et al. found on Gemma. The latent that fires most selectively on cooking words is
# mostly a reader of them; the one that best writes them usually has a modest F1.
# </details>

# %%
f1 = data.input_scores.f1[:, data.input_scores.names.index("topic_word=cooking")]
fig, ax = plt.subplots(figsize=(5.5, 3.6))
shown = torch.isfinite(cooking_output)
ax.scatter(f1[shown], cooking_output[shown], s=10)
best_in = se.best_latent(data.input_scores, "topic_word=cooking")
for latent, label in ((best_in, "best input"), (cook_latent, "best output")):
    ax.scatter([f1[latent]], [cooking_output[latent]], s=60, facecolors="none",
               edgecolors="tab:red")
    ax.annotate(f"{label} (latent {latent})", (float(f1[latent]), float(cooking_output[latent])),
                fontsize=8, xytext=(4, 4), textcoords="offset points")
ax.set_xlabel("input score: F1 for topic_word=cooking")
ax.set_ylabel("output score: rise of P(cooking word)")
ax.set_title(f"the {int(shown.sum())} latents with the best input scores", fontsize=10)
fig.tight_layout()
plt.show()
print(f"best input latent {best_in}: F1 {float(f1[best_in]):.2f}, output "
      f"{float(cooking_output[best_in]):+.4f};  best output latent {cook_latent}: F1 "
      f"{float(f1[cook_latent]):.2f}, output {float(cooking_output[cook_latent]):+.4f}")

# %% [markdown]
# ## 9. The protocol: choose on some prompts, report on others
#
# **Why.** Every method has a knob, the strength, and a sweep of strengths draws a curve of
# success against cost. Reporting the best point of a curve measured on the same prompts
# flatters the method (with few prompts, a lucky strength looks like a good one). AxBench's
# protocol: choose the strength on *training* prompts, report it on *held-out* prompts.
# Here the choice is the strength with the best training success whose CE increase (on the
# training prompts' own held-out text) is within a budget; a tie goes to the cheaper
# strength. Strength 0 (no steering) costs nothing, so a sweep that includes it always has
# an answer; if a sweep without it has nothing within budget, take its weakest strength.
#
# **Your turn.** `choose_strength(points, method, budget)`: `points` is a list of
# `SteeringPoint`s (fields `method`, `strength`, `split` ("train" or "test"), `success`,
# `ce_increase`, ...); return the chosen strength of `method`, looking at its training points
# only.
#
# <details><summary>Hint</summary>
#
# Filter by method and split; among the points within budget, `min(..., key=lambda p:
# (-p.success, p.ce_increase))` takes the best success and then the lower cost. If none fits,
# fall back to the point of smallest strength.
# </details>

# %%
def choose_strength(points: Sequence[SteeringPoint], method: str, budget: float) -> float:
    """The strength of `method` with the best training success within the CE budget."""
    # EXERCISE choose_strength
    train = [p for p in points if p.method == method and p.split == "train"]
    allowed = [p for p in train if p.ce_increase <= budget]
    if not allowed:
        allowed = [min(train, key=lambda p: p.strength)]
    return min(allowed, key=lambda p: (-p.success, p.ce_increase)).strength
    # END EXERCISE


# %%
checks.steer.test_choose_strength(choose_strength)

# %% [markdown]
# **The sweep.** Seven methods, on three targets, one per kind of concept: the topic
# *cooking*, the sentiment *negative* and the tense *past*. Each direction is scaled so that
# the strength is the norm of what is added (a fraction of the mean residual norm); the
# clamp sets its latent to strength / |W_dec[i]|, so where the latent was silent it adds the
# same vector as the row would; the prefix's strength is its number of sentences. Every
# continuation is sampled with the same seed, so two methods differ by their steering, not
# by the draw. The SAE methods use the latent of the best input score (`sae_input`) or of
# the best output score among the top candidates by input score (`sae_output`, and
# `sae_clamp` clamps that latent). This is the slow cell of the notebook.
#
# **Expect:** a progress bar per target, then one panel per target: success (test prompts)
# against CE increase, a line per method from its clean point (strength 0, shared by all) to
# its strongest; the gray line is the budget.

# %%
BUDGET = 0.5  # nats of CE increase
fractions = settings.scale(ci=(0.25, 0.5, 1.0), laptop=(0.125, 0.25, 0.5, 1.0),
                           gpu=(0.125, 0.25, 0.5, 0.75, 1.0))
targets = [("topic", "cooking"), ("sentiment", "negative"), ("tense", "past")]
sweeps: dict[str, list[SteeringPoint]] = {}
for concept, target in targets:
    out = se.target_output_scores(data, concept, target, n_candidates, progress=False)
    methods = se.methods_for(data, concept, target, output=out)
    strengths = {m: [f * norm for f in fractions] for m in methods}
    strengths["prefix"] = [1, 2, 3]
    sweeps[f"{concept}={target}"] = se.sweep(data, concept, target, methods, strengths)
plot_steering_curves(sweeps, budget=BUDGET, labels=se.METHOD_LABELS)
plt.show()

# %% [markdown]
# **The table.** For each target and method: the strength chosen on the training prompts
# within the budget, the success it gets on the test prompts, its CE increase there, and the
# lowest CE increase at which test success reaches 0.5 ("never" if no strength swept did).
# The clean model's success is the floor to compare with: a target the model writes often
# anyway (a sentiment it favours) starts high.
#
# **Expect:** the table, then for each target the method that did best on held-out prompts
# within the budget and the methods whose test success reached 0.5 at a cost within the
# budget (computed, not written in advance).

# %%
rows = []
for key, points in sweeps.items():
    concept, target = key.split("=")
    rows += se.steering_table(points, concept, target, BUDGET)
print(se.format_table(rows, BUDGET))
for key in sweeps:
    mine = [r for r in rows if f"{r.concept}={r.target}" == key]
    best = max(mine, key=lambda r: (r.success, -r.ce_increase))
    reached = [se.METHOD_LABELS[r.method] for r in mine if r.cost_to_half <= BUDGET]
    print(f"{key}: clean {mine[0].clean_success:.2f}; best within budget: "
          f"{se.METHOD_LABELS[best.method]} ({best.success:.2f}); reached 0.5 within budget: "
          f"{', '.join(reached) or 'none'}")

# %% [markdown]
# **What the numbers say.** Read your own table first. On the shipped model and SAE, at both
# the ci and the laptop budget, these held:
#
# - The random direction of equal norm never reaches 0.5 on any target: what the other
#   directions do is not an effect of pushing the residual stream around.
# - Difference of means, which needs only labels and one line of code, reaches 0.5 on every
#   target within the budget, past tense included.
# - No SAE row steers the tense: the latents picked for past tense (by either score) leave
#   it at the clean rate, or break the text, at every strength. Whatever this SAE learned
#   about tense, it is not one latent that writes it.
# - On cooking, the SAE row picked by output score and the clamp of its latent reach 0.5
#   within the budget, and so does the prompt prefix, at a cost of its own (the text after
#   it is predicted as if it continued the prefix).
#
# `docs/steering.md` has the same table for all 8 topics, both sentiments and both tenses
# (written by `scripts/steering_report.py`, about 20 minutes on a laptop CPU), where the same
# patterns hold across topics.
#
# With 8 to 24 prompts per set, the winner of a close race changes with the sample: a 0.1
# difference in success is a difference of one or two prompts. The protocol does not remove
# that noise; it keeps it from being mistaken for a method's strength. None of this is a
# verdict on SAEs in general; it is what this model, this SAE and these concepts show.
#
# ## 10. The Pareto front
#
# **Why.** A method is worth using at a strength if no other point does better on both
# axes: at least as much success for no more cost, and strictly better on one. Those points
# form the *Pareto front*, the best trade-offs available.
#
# **Your turn.** `pareto_front(points)`: the points no other point beats, sorted by cost
# (then success). Two points that tie on both axes beat neither, so both stay.
#
# <details><summary>Hint</summary>
#
# For each point p, look for a q with `q.success >= p.success`, `q.ce_increase <=
# p.ce_increase` and at least one of the two strict. Keep p if there is none.
# </details>

# %%
def pareto_front(points: Sequence[SteeringPoint]) -> list[SteeringPoint]:
    """The undominated points (success up, cost down), sorted by cost then success."""
    # EXERCISE pareto_front
    def beaten(p: SteeringPoint) -> bool:
        return any(q.success >= p.success and q.ce_increase <= p.ce_increase
                   and (q.success > p.success or q.ce_increase < p.ce_increase)
                   for q in points)

    return sorted((p for p in points if not beaten(p)), key=lambda p: (p.ce_increase, p.success))
    # END EXERCISE


# %%
checks.steer.test_pareto_front(pareto_front)

# %% [markdown]
# **Expect:** for each target, the methods that make up its front on the test prompts.

# %%
for key, points in sweeps.items():
    front = se.pareto_front([p for p in points if p.split == "test"])
    print(f"{key}: " + ", ".join(f"{se.METHOD_LABELS.get(p.method, p.method)} "
                                  f"({p.success:.2f} at {p.ce_increase:.3f})"
                                  for p in front if p.strength > 0))

# %% [markdown]
# ## 11. The steering playground
#
# **Why.** Numbers first, then your own eyes. The playground steers one prompt with a latent
# (picked by index, or as the best latent for a label), clamps it, or adds one of the
# directions above, and shows the unsteered and steered continuations side by side with
# their scores and the intervention's cost on held-out text. It opens on the cooking latent
# of section 8, at the alpha that adds half the mean residual norm (the strength that did
# steered cooking in section 2). Raise alpha and watch the cost column: the text turns to
# cooking first, then stops being StoryWorld.
#
# **Expect:** a row of controls, then two columns of text with their topic, sentiment and
# tense verdicts, and the CE increase and KL of the steered side.

# %%
play = steering_playground(
    model, sae, scores=data.input_scores,
    directions={"difference of means: cooking": directions["diff. of means"],
                "probe direction: cooking": directions["probe"]},
    latent=cook_latent, prompt=data.test_prompts[0],
    alpha=round(0.5 * norm / float(sae.W_dec[cook_latent].norm()), 1))  # a step of norm/2

# %% [markdown]
# ## 12. On GPT-2
#
# **Why.** StoryWorld's scorers judge StoryWorld text only, so the measurements above need
# the offline model. The interventions themselves are plain TransformerLens 4 hooks and work
# on GPT-2 unchanged. With GPT-2 available (`SAE_COURSE_MODEL=gpt2`), the next cell loads
# `gpt2-small-res-jb` at layer 8 and opens the playground on it; look a latent up on
# Neuronpedia (notebook 05's dashboard links to it) and steer with it.

# %%
if settings.model == "gpt2":
    gpt2 = load_model("gpt2", device=settings.device)
    jb_sae = pretrained.load_pretrained(pretrained.GPT2_RELEASE, "blocks.8.hook_resid_pre",
                                        device=settings.device)
    gpt2_play = steering_playground(gpt2, jb_sae, prompt="I went to the market and",
                                    latent=0)
else:
    print("Set SAE_COURSE_MODEL=gpt2 (with GPT-2 downloaded) to steer gpt2-small-res-jb.")

# %% [markdown]
# ## Summary
#
# - A steering hook must act on every forward pass of `generate`, the cached one-token steps
#   included, or it steers only the prompt.
# - Clamping and ablating keep the SAE's error term, so the only change is the latent's.
# - Attribution (activation times gradient through a detached error term) estimates every
#   latent's ablation effect in one backward pass, and here it ranks them well.
# - Steering is worth what it buys at what it costs: success on held-out prompts at a
#   strength chosen on others, against the CE increase on held-out text.
# - Which latent you steer with matters as much as whether you use an SAE: pick by output
#   score, and compare with difference of means, a random direction and a prompt.
