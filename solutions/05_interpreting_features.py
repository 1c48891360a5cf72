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
# # 05 · Interpreting features, checked against the ground truth
#
# Notebook 04 trained SAEs and measured how well they reconstruct. This one asks what their
# latents *mean*. The usual way is to read a latent's top-activating examples and name the
# pattern. That is a good start and a poor finish: people see patterns that are not there,
# top examples hide what a latent does most of the time, and a name that fits ten examples
# may be wrong on the next thousand.
#
# The offline model was trained on StoryWorld, a language whose every token carries known
# labels (its topic, sentiment and tense, whether it is inside a quote, a number, a character's
# name, its part of speech...). So here every interpretation can be **checked**: an
# explanation is a claim about which tokens a latent fires on, and the labels say whether
# that claim is true.
#
# You will write 9 pieces, each followed by a check cell:
#
# 1. `top_positions`: the highest activations, without overlapping windows;
# 2. `quantile_bands`: bands of equal counts, to sample examples below the top;
# 3. `logit_lens`: the tokens a latent's decoder direction promotes and suppresses;
# 4. `precision_recall_f1`: how well "the latent fires" predicts "the label holds";
# 5. `k_sparse_probe`: how well the best k latents predict a label together;
# 6. `detection_score`: scoring an explanation by telling activating from silent examples;
# 7. `match_latents`: pairing latents of two SAEs by decoder cosine (feature splitting);
# 8. `absorption_rate`: how often a parent latent goes silent where a child latent fires;
# 9. `matryoshka_loss`: the nested-prefix loss that counters absorption.
#
# Every demonstration uses the course library (`sae_course.features`, `sae_course.scorecard`,
# `sae_course.splitting`, `sae_course.dashboard`), so if you are stuck on one exercise you can
# still run the rest. Every measure is defined where it is first used, and all of them
# together in `docs/interpretation.md`.
#
# Reading: Bricken et al. 2023, *Towards Monosemanticity*
# ([transformer-circuits.pub/2023/monosemantic-features](https://transformer-circuits.pub/2023/monosemantic-features)),
# for dashboards, quantile sampling and feature splitting; Gao et al. 2024
# ([arXiv 2406.04093](https://arxiv.org/abs/2406.04093)) and SAEBench (Karvonen et al. 2025,
# [arXiv 2503.09532](https://arxiv.org/abs/2503.09532)) for sparse probing and detection
# scoring; Chanin et al. 2024, *A is for Absorption*
# ([arXiv 2409.14507](https://arxiv.org/abs/2409.14507)); Bussmann, Nabeshima et al. 2025,
# *Learning Multi-Level Features with Matryoshka SAEs*
# ([arXiv 2503.17547](https://arxiv.org/abs/2503.17547)); Paulo & Belrose 2025 on seeds
# ([arXiv 2501.16615](https://arxiv.org/abs/2501.16615)).

# %% tags=["setup"]
from collections.abc import Callable

import matplotlib.pyplot as plt
import torch
from IPython.display import HTML, display
from torch import Tensor
from tqdm.auto import tqdm

from sae_course import checks, pretrained
from sae_course import features as feat
from sae_course import scorecard as sc
from sae_course import splitting
from sae_course.activations import harvest
from sae_course.dashboard import feature_dashboard
from sae_course.features import Example
from sae_course.models import load_model
from sae_course.probing import fit_probe
from sae_course.settings import get_settings, seed_everything
from sae_course.storyworld import FEATURES, HIERARCHY, labelled_contexts

settings = get_settings()
seed_everything(settings.seed)
print(settings)

# %% [markdown]
# ## 1. The SAE, the text and every latent's activations
#
# **Why.** Interpreting a latent starts from where it fires. We take the main SAE of the
# shipped suite (TopK, 1536 latents, k = 16, on `blocks.2.hook_resid_pre` of the offline
# model; notebook 04 measured it) and run it over StoryWorld contexts that were never used in
# training, with their labels (`labelled_contexts`). The residual stream at the hook is
# harvested once (every SAE of this notebook reads it, and so do the probes of section 8);
# `features.latent_activations` encodes it in batches and keeps only the non-zero
# activations, latent by latent (without `activations=` it runs the model itself), so that one
# latent's activations over every token are a single slice. The BOS token that starts every
# context is left out: many latents fire on it for reasons of position, not meaning.
#
# **Expect:** the number of contexts and tokens, and an L0 of exactly 16 on every token (a
# TopK SAE), so about 16 × tokens stored activations.

# %%
model = load_model("offline")  # StoryWorld's labels exist only for the offline model's text
RELEASE = "storyworld-res"
suite = pretrained.list_pretrained(RELEASE)
main_id = next(p.sae_id for p in suite if p.role == "main")
hook_name = next(p.hook_name for p in suite if p.role == "main")
sae = pretrained.load_pretrained(RELEASE, main_id)
n_contexts = settings.scale(ci=128, laptop=384, gpu=384)
ctx = labelled_contexts(model.tokenizer, n_contexts, seed=settings.seed + 50_000)
residual = torch.cat([harvest(model, batch, hook_name)  # the SAE's input, harvested once
                      for batch in tqdm(ctx.tokens.split(32), desc="residual stream")])
acts = feat.latent_activations(model, sae, ctx, activations=residual)
print(f"SAE {main_id}: {sae.cfg.d_sae} latents at {hook_name}")
print(f"{len(ctx)} contexts, {acts.n_counted:,} tokens (BOS excluded), "
      f"{len(acts.values):,} non-zero activations = {len(acts.values) / acts.n_counted:.1f} "
      "per token")

# %% [markdown]
# ## 2. Density: how often each latent fires
#
# **Why.** Before any latent is read, its firing density (the fraction of tokens it fires
# on) says what kind of thing it can be. A latent firing on 30% of tokens cannot mean "the
# word *soup*"; one firing once in ten thousand tokens cannot mean "a verb". On a log scale
# the densities of a healthy SAE form one broad hump, here around 1%: 16 active latents of
# 1536 is 1.04% on average.
#
# **Expect:** a hump between about 10^-3 and 10^-1, a handful of dense latents to the right
# (firing on more than 10% of tokens), a ragged left edge of tall single bars (latents that
# fired on only one, two or three of these tokens: each count is one bar), and the latents that
# never fired on these tokens counted apart (they are not necessarily dead: notebook 04 measured dead latents over many
# more tokens).

# %%
density = acts.density()
live = density > 0
fig, ax = plt.subplots(figsize=(7, 3))
ax.hist(torch.log10(density[live]).numpy(), bins=50, color="tab:blue")
ax.axvline(-1, color="gray", ls="--", lw=1)
ax.set_xlabel("log10 firing density")
ax.set_ylabel("latents")
ax.set_title(f"{int(live.sum())} latents fired on these tokens; {int((~live).sum())} did not")
plt.show()
print(f"dense latents (> 10% of tokens): {int((density > 0.1).sum())}; "
      f"median density of the rest {float(density[live & (density <= 0.1)].median()):.4f}")


# %% [markdown]
# ## 3. Top examples, without repeats
#
# **Why.** The examples a latent fires on most strongly are the first thing to read. Each is
# shown as a window of text around the token (a dozen tokens before it, a few after). But
# the top activations of a latent often sit next to each other (a latent for "inside a
# quote" fires on every token of one long quote), so the top 10 activations can be ten views
# of one passage. We take them greedily instead: from the highest down, skipping any token
# whose window would overlap one already taken.
#
# **Your turn.** `top_positions(activations, n, width)` gets one latent's activations
# `[n_contexts, context_len]` and returns the (context, position) pairs of its `n` highest
# non-zero activations, highest first, where two positions of the same context must be more
# than `width` tokens apart. Ties go to the earlier token in (context, position) order.
#
# <details><summary>Hint</summary>
#
# Flatten, keep the non-zero entries, sort them by activation with
# `torch.argsort(-values, stable=True)` (a stable sort keeps ties in flat order), then walk
# down the list keeping a list of taken (context, position) pairs. `divmod(flat_index,
# context_len)` turns a flat index into (context, position).
# </details>

# %%
def top_positions(activations: Tensor, n: int, width: int) -> list[tuple[int, int]]:
    """The `n` highest non-zero activations, non-overlapping, highest first."""
    # EXERCISE top_positions
    L = activations.shape[1]
    flat = activations.reshape(-1)
    nonzero = flat.nonzero()[:, 0]
    order = nonzero[torch.argsort(-flat[nonzero], stable=True)]
    taken: list[tuple[int, int]] = []
    for index in order.tolist():
        c, p = divmod(index, L)
        if all(c != tc or abs(p - tp) > width for tc, tp in taken):
            taken.append((c, p))
            if len(taken) == n:
                break
    return taken
    # END EXERCISE


# %%
checks.interpret.test_top_positions(top_positions)

# %% [markdown]
# Here are the top examples of three latents, picked as the best single latent for three
# labels (section 6 explains how): a character's name, a number and a comma... or whatever
# the ground truth says they are. The focus token is in [[double brackets]].
#
# **Predict, then reveal.** Before you run the next cell: a TopK SAE gives every token
# exactly 16 active latents. Will the strongest activations of a latent that tracks
# "character names" fall on the name itself, or on the token after it?
#
# <details><summary>Answer</summary>
#
# Look at the brackets. The residual stream at a token is what the model knows *at* that
# token, so a "name" latent fires on the name's own tokens; but a model that predicts the
# next token also builds features for "a name was just said" (what comes next is often a
# verb), and those fire one token later. Both kinds are in this SAE, and the labels in
# section 6 tell them apart.
# </details>

# %%
labels_flat = sc.counted_features(ctx, FEATURES)
all_scores = sc.label_scores(acts, labels_flat, FEATURES)
showcase = {}
for label in ("entity_type=character", "is_number", "quote_mark"):
    f1, latent = all_scores.f1[:, FEATURES.index(label)].max(dim=0)
    showcase[label] = int(latent)
    print(f"latent {int(latent)} (best for {label}, F1 {float(f1):.2f}):")
    for example in feat.top_examples(acts, int(latent), n=4):
        print(f"   {example.activation:5.2f}  {feat.example_text(example, model.tokenizer)}")


# %% [markdown]
# ## 4. Below the top: quantile samples
#
# **Why.** Top examples show what a latent does at its strongest, which is rarely what it
# does most of the time. *Towards Monosemanticity* samples examples from intervals of the
# activation distribution as well. We split a latent's non-zero activations into bands of
# equal **counts** (band 0 the weakest quarter, band 3 the strongest), then draw a few
# examples from each. Bands of equal width in activation would put almost every example in
# the lowest band, since most activations are small.
#
# **Your turn.** `quantile_bands(values, n_bands)` returns, for each of the `n` activations
# in `values`, its band: `rank * n_bands // n`, where `rank` is its position in ascending
# order (ties keep their order in `values`).

# %%
def quantile_bands(values: Tensor, n_bands: int) -> Tensor:
    """Band index (0 = weakest) of each activation, in `n_bands` bands of equal counts."""
    # EXERCISE quantile_bands
    ranks = torch.argsort(torch.argsort(values, stable=True), stable=True)
    return (ranks * n_bands) // len(values)
    # END EXERCISE


# %%
checks.interpret.test_quantile_bands(quantile_bands)

# %% [markdown]
# **Expect:** the weakest band of a latent often looks different from its top: weaker
# activations on related tokens, or on the same kind of token in a less typical context.

# %%
latent = showcase["entity_type=character"]
for band, examples in feat.quantile_examples(acts, latent, n_bands=4, per_band=2,
                                             seed=settings.seed).items():
    for example in examples:
        print(f"band {band}  {example.activation:5.2f}  "
              f"{feat.example_text(example, model.tokenizer)}")

# %% [markdown]
# ## 5. The logit lens of a latent
#
# **Why.** Examples show what makes a latent fire (its input side). Its decoder row shows what
# it does: it adds `W_dec[i]` to the residual stream. Read straight through the unembedding,
# `W_dec[i] @ W_U` is the latent's direct effect on the next-token logits: which tokens it
# makes more likely, which less. This ignores every layer between the SAE and the output (so
# on an early layer it is only a rough guide), but it costs one matrix product.
#
# **Your turn.** `logit_lens(W_dec, W_U, latent, k)` returns `(top_ids, bottom_ids)`: the ids
# of the `k` tokens with the largest and the `k` with the most negative values of
# `W_dec[latent] @ W_U`, each in order (most extreme first).

# %%
def logit_lens(W_dec: Tensor, W_U: Tensor, latent: int, k: int) -> tuple[Tensor, Tensor]:
    """Token ids the latent's decoder row promotes most (top) and suppresses most (bottom)."""
    # EXERCISE logit_lens
    logits = W_dec[latent] @ W_U
    return logits.topk(k).indices, (-logits).topk(k).indices
    # END EXERCISE


# %%
checks.interpret.test_logit_lens(logit_lens)

# %% [markdown]
# **Expect:** for a latent that fires on names, the top tokens are what follows a name in
# StoryWorld (verbs such as " lives" or " has"), not names: the logit lens shows what a
# latent predicts, which is often the next word's kind rather than its own.

# %%
for label, latent in showcase.items():
    lens = feat.logit_lens(sae, model, latent, k=8)
    print(f"latent {latent} ({label}):\n   promotes {lens.top_tokens}\n"
          f"   suppresses {lens.bottom_tokens}")

# %% [markdown]
# ## 6. The dashboard
#
# Everything so far, on one screen, for any latent: density and histogram, the logit lens,
# top and quantile examples with the activating tokens shaded, the ground-truth labels that
# fit it best (next section), and a box to type your own text. Pick a latent by index, by
# label, or by a token of its logit lens.

# %%
dashboard = feature_dashboard(model, sae, acts, ctx, all_scores)

# %% [markdown]
# ### Interpret these before you look
#
# Use the dashboard (not the labels panel: cover it with your hand) on the four latents
# below, then write your guess of the label that fits each best, as one of the label names
# in `FEATURES` (printed below). The next cell grades your guesses against the ground truth:
# a guess is right when its F1 is at least 80% of the best label's F1.

# %%
mystery = [int(all_scores.f1[:, FEATURES.index(label)].argmax())
           for label in ("pos=punct", "pos=det", "in_list", "entity_type=city")]
print("latents to interpret:", mystery)
print("labels:", ", ".join(FEATURES))

# %%
my_guesses = {mystery[0]: "pos=punct", mystery[1]: "pos=noun", mystery[2]: "in_list",
              mystery[3]: "entity_type=country"}  # replace with your own guesses
graded = checks.interpret.grade_guesses(my_guesses, all_scores)


# %% [markdown]
# ## 7. The ground truth: precision, recall and F1
#
# **Why.** An explanation such as "fires on numbers" is a prediction, and it can be scored
# like one. Over every token: the latent fires or not; the label holds or not. **Precision**
# is the share of the latent's firings where the label holds (does it fire only on numbers?);
# **recall** the share of the label's tokens where the latent fires (does it fire on every
# number?); **F1** their harmonic mean, 2PR / (P + R), high only when both are.
#
# **Your turn.** `precision_recall_f1(fired, label)` for two `[n_tokens]` bool tensors,
# returning three floats. An empty prediction has precision 0, an empty label recall 0, and
# F1 is 0 when there is nothing to count.
#
# <details><summary>Hint</summary>
#
# With tp = (fired & label).sum(), F1 = 2 tp / (fired.sum() + label.sum()), which is the
# harmonic mean of P and R written without dividing by zero.
# </details>

# %%
def precision_recall_f1(fired: Tensor, label: Tensor) -> tuple[float, float, float]:
    """Precision, recall and F1 of "the label holds wherever the latent fires"."""
    # EXERCISE precision_recall_f1
    tp = float((fired & label).sum())
    n_fired, n_label = float(fired.sum()), float(label.sum())
    precision = tp / n_fired if n_fired else 0.0
    recall = tp / n_label if n_label else 0.0
    f1 = 2 * tp / (n_fired + n_label) if n_fired + n_label else 0.0
    return precision, recall, f1
    # END EXERCISE


# %%
checks.interpret.test_precision_recall_f1(precision_recall_f1)

# %% [markdown]
# ## 8. Many latents at once: k-sparse probes
#
# **Why.** A factor need not live in one latent. Sparse probing (Gao et al. 2024; SAEBench)
# asks how well the **best k latents together** predict a label: rank the latents by how
# differently they activate on positive and negative tokens of a training split, fit a
# logistic regression on the top k, and score it on held-out tokens. With balanced classes,
# chance is 0.5. Beside it stands the same probe on the raw residual stream (all 192
# dimensions, the SAE's input): the ceiling of what the model holds linearly at that layer,
# as notebook 03 measured for story-level factors.
#
# **Your turn.** `k_sparse_probe(x_train, y_train, x_test, y_test, k)`: latents `[n, d_sae]`
# and bool labels `[n]` for a training and a test split. Rank the latents by
# |mean activation on positives − mean on negatives| over the training split (stable sort,
# largest first), fit `fit_probe(x_train[:, chosen], y_train.long(), n_classes=2)` on the k
# best, and return its accuracy on the test split (`probe.accuracy(...)`).

# %%
def k_sparse_probe(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
                   k: int) -> float:
    """Held-out accuracy of a logistic regression on the k most class-separating latents."""
    # EXERCISE k_sparse_probe
    gap = x_train[y_train].mean(0) - x_train[~y_train].mean(0)
    chosen = torch.argsort(gap.abs(), descending=True, stable=True)[:k]
    probe = fit_probe(x_train[:, chosen], y_train.long(), n_classes=2)
    return probe.accuracy(x_test[:, chosen], y_test.long())
    # END EXERCISE


# %%
checks.interpret.test_k_sparse_probe(k_sparse_probe)

# %% [markdown]
# ### The scorecard of the main SAE
#
# `scorecard.scorecard` puts it together for every label with enough tokens: the best single
# latent (chosen on training stories, its F1 measured on held-out stories, so no latent is
# credited for fitting noise), and the k = 1, 2, 5, 16 sparse probes against the residual
# probe. (At the ci budget it skips the single characters' names but Mara's and the single
# subtopic words, to stay fast; at laptop it scores every label.)
#
# **Expect:** two kinds of labels. Word-level ones (a part of speech, a number, a character's
# name, a quote mark) often have a latent with a fair F1, and their probes climb from k = 1 to
# near the residual ceiling by k = 16. Story-level ones (the topic, sentiment or tense of the
# whole story, true on every token of it) do not: their probes stay flat from k = 1 to k = 16,
# at a ceiling that is itself low, because at this layer the model holds them only weakly
# (notebook 03's probes). Read their F1 with care: a latent that fires on half of all tokens,
# whatever they say, scores an F1 near 0.5 on any label that holds on half the tokens, such as
# `sentiment=positive`. The k = 1 probe, with balanced classes, has no such blind spot.

# %%
scored_labels = settings.scale(  # at ci, one character's name and no single subtopic words
    ci=[n for n in FEATURES if not n.startswith(("entity=", "subtopic_word=")) or n == "entity=Mara"],
    laptop=FEATURES, gpu=FEATURES)
cards = sc.scorecard(acts, ctx, scored_labels, residual=residual,
                     n_per_class=settings.scale(ci=200, laptop=500, gpu=500), seed=settings.seed)
story_level = [c for c in cards if c.label.split("=")[0] in ("topic", "subtopic", "sentiment",
                                                             "tense")]
word_level = [c for c in cards if c not in story_level]
print(sc.format_scorecard([c for c in cards if c.label in (
    "topic=cooking", "sentiment=positive", "tense=past", "sentiment_word=positive",
    "verb_tense=past", "is_number", "entity_type=character", "entity=Mara", "in_quote",
    "pos=punct", "pos=adj")]))


def median(values: list[float]) -> float:
    return float(torch.tensor(values).median())


def summary(group: list[sc.LabelCard]) -> str:
    med = median
    return (f"median F1 {med([c.f1 for c in group]):.2f}; probe k=1 "
            f"{med([c.probe[1] for c in group]):.2f}, k=16 {med([c.probe[16] for c in group]):.2f}"
            f", residual {med([c.residual_probe for c in group]):.2f}")


print(f"\n{len(cards)} labels scored; F1 >= 0.8: {sum(c.f1 >= 0.8 for c in cards)}, "
      f">= 0.6: {sum(c.f1 >= 0.6 for c in cards)}")
print(f"word-level ({len(word_level)}): {summary(word_level)}")
print(f"story-level ({len(story_level)}): {summary(story_level)}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for group, colour, name in ((word_level, "tab:blue", "word-level"),
                            (story_level, "tab:orange", "story-level")):
    axes[0].scatter([c.residual_probe for c in group], [c.probe[16] for c in group], s=14,
                    color=colour, label=name)
    axes[1].scatter([c.precision for c in group], [c.recall for c in group], s=14,
                    color=colour, label=name)
axes[0].plot([0.5, 1], [0.5, 1], color="gray", lw=1, ls="--")
axes[0].set(xlabel="residual-stream probe accuracy", ylabel="16-latent probe accuracy",
            title="16 latents against the residual ceiling")
axes[1].set(xlabel="precision of the best latent", ylabel="recall of the best latent",
            title="the best single latent per label", xlim=(0, 1.02), ylim=(0, 1.02))
for ax in axes:
    ax.legend(loc="lower right")
plt.tight_layout()
plt.show()

# %% [markdown]
# Read the right panel: many labels sit at high precision and low recall. Their best latent
# fires on a *part* of the label's tokens (for a topic, the tokens right after a topical word;
# for names, the names that start a sentence) and stays silent on the rest: the label is
# carried by several latents, each covering one part, which is what a sparse code tends to
# do with a broad factor. The few dots at the middle of both axes are the dense latents
# firing on about half of everything.

# %% [markdown]
# ## 9. Automated interpretability, without a language model
#
# **Why.** Pipelines such as SAEBench's write an explanation of each latent with a language
# model, then score it by **detection**: shown held-out examples (some where the latent fires,
# from its top and from its quantile bands, and random ones where it is silent), can the
# explanation tell which is which? We do the same, with the best label on the training
# stories as the explanation and the labels as a perfect reader of it. A learner with an API
# key can plug a language model into the same interface (`scorecard.Explainer`: `explain`
# and `predict`); nothing here needs one.
#
# **Your turn.** `detection_score(predict, activating, silent)`: `predict(example)` returns
# True when the explanation says the latent fires on the example. Return the **balanced**
# accuracy, the mean of the hit rate on `activating` and the correct-rejection rate on
# `silent` (so 0.5 is chance whatever the sizes of the two lists).

# %%
def detection_score(predict: Callable[[Example], bool], activating: list[Example],
                    silent: list[Example]) -> float:
    """Balanced accuracy of `predict` at telling activating examples from silent ones."""
    # EXERCISE detection_score
    hits = sum(bool(predict(e)) for e in activating) / len(activating)
    rejections = sum(not predict(e) for e in silent) / len(silent)
    return (hits + rejections) / 2
    # END EXERCISE


# %%
checks.interpret.test_detection_score(detection_score)

# %% [markdown]
# **Expect:** a median well above chance but far from 1: a single label explains part of what
# a latent does. The histogram shows the spread; the best-explained latents are the
# word-level ones of the scorecard.

# %%
train_rows, test_rows = sc.split_rows(ctx)
train_labels = labels_flat.clone()
train_labels[test_rows] = False
train_scores = sc.label_scores(acts.restrict(train_rows), train_labels, FEATURES)
explainer = sc.LabelExplainer(train_scores, ctx)
candidates = live.nonzero()[:, 0]
gen = torch.Generator().manual_seed(settings.seed)
scored = candidates[torch.randperm(len(candidates), generator=gen)[
    :settings.scale(ci=300, laptop=len(candidates), gpu=len(candidates))]]
detections = sc.detection_scores(explainer, acts.restrict(test_rows), scored.tolist(),
                                 seed=settings.seed)
det = torch.tensor([score for _, score in detections.values()])
print(f"{len(detections)} live latents scored; median detection {float(det.median()):.2f}, "
      f"share above 0.8: {float((det > 0.8).float().mean()):.2f}")
best_explained = sorted(detections.items(), key=lambda kv: -kv[1][1])[:5]
for latent, (explanation, score) in best_explained:
    print(f"   latent {latent}: '{explanation}' detects at {score:.2f}")
fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(det.numpy(), bins=20, range=(0, 1), color="tab:green")
ax.set(xlabel="detection score (balanced accuracy)", ylabel="latents",
       title="label explanations on held-out stories")
plt.show()


# %% [markdown]
# ## 10. Feature splitting across widths
#
# **Why.** The suite has TopK SAEs of 192, 384, 768 and 1536 latents on the same hook. As the
# dictionary grows, one latent of a narrow SAE tends to become several of a wider one, each
# a more specific case (Bricken et al. call it feature splitting). To see it we pair latents
# across SAEs by the cosine similarity of their decoder rows: two latents that write the same
# direction do the same thing to the model.
#
# **Your turn.** `match_latents(W_a, W_b)` returns, for every row of `W_a` `[d_a, d]`, the
# best cosine similarity with a row of `W_b` `[d_b, d]` and that row's index. An opposite
# direction (cosine −1) is not a match.

# %%
def match_latents(W_a: Tensor, W_b: Tensor) -> tuple[Tensor, Tensor]:
    """(best cosine, index in W_b) for every decoder row of W_a."""
    # EXERCISE match_latents
    a = W_a / W_a.norm(dim=-1, keepdim=True)
    b = W_b / W_b.norm(dim=-1, keepdim=True)
    best = (a @ b.T).max(dim=1)
    return best.values, best.indices
    # END EXERCISE


# %%
checks.interpret.test_match_latents(match_latents)

# %% [markdown]
# **Predict, then reveal.** A wider SAE has more latents to spend. Will its best single latent
# for "a character's name" be better or worse than a narrow SAE's?
#
# <details><summary>Answer</summary>
#
# Here, worse: more latents let the SAE spend several on one concept, each for a narrower
# case, and F1 rewards a single latent that covers the whole label. A wider dictionary is more
# specific, not more faithful to any one label. (Section 13 measures how much of the gap is
# the seed rather than the width.)
# </details>
#
# **Expect:** the best latent for "a character's name" has a higher F1 in the narrow SAEs
# than in the wide ones: the wide SAEs split the one concept over several latents (names at
# the start of a sentence, names after "said", single frequent names), none of which covers
# it alone. The children listed under the narrow SAE's name latent are those pieces. Keep the
# gap in mind for section 13: the same F1 moves by about as much between two seeds of the
# 1536-latent SAE, so with one run per width the trend is a hint, not a measurement.

# %%
widths = sorted((p for p in suite if p.role in ("width", "main")), key=lambda p: p.d_sae)
family = {p.d_sae: pretrained.load_pretrained(RELEASE, p.sae_id) for p in widths}
family_acts, family_scores = {}, {}
for d, s in tqdm(family.items(), desc="each width's activations and label scores"):
    family_acts[d] = acts if d == sae.cfg.d_sae else feat.latent_activations(
        model, s, ctx, progress=False, activations=residual)
    family_scores[d] = sc.label_scores(family_acts[d], labels_flat, FEATURES)
name_column = FEATURES.index("entity_type=character")
for d, s in family_scores.items():
    f1, latent = s.f1[:, name_column].max(dim=0)
    print(f"{d:5d} latents: best 'character name' latent {int(latent):4d}, F1 {float(f1):.2f}")

narrow, wide = min(family), max(family)
parent = int(family_scores[narrow].f1[:, name_column].argmax())
children = splitting.split_children(family[narrow].W_dec, family[wide].W_dec, parent,
                                    min_cosine=0.3)
print(f"\nlatent {parent} of the {narrow}-latent SAE and its children in the {wide}-latent SAE:")
for child, cosine in children[:8]:
    f1, j = family_scores[wide].f1[child].max(dim=0)
    print(f"   latent {child:4d} (cosine {cosine:.2f}): best label {FEATURES[int(j)]} "
          f"(F1 {float(f1):.2f}), density {float(family_acts[wide].density()[child]):.4f}")

# %% [markdown]
# ## 11. Absorption
#
# **Why.** Splitting has a sharper edge. When a child feature implies its parent (every token
# of "Mara" is a character's name), a sparse SAE can save an active latent: the "Mara"
# latent absorbs the "character name" direction, and the general name latent goes **silent**
# on Mara's tokens. An interpreter who reads the parent latent as "fires on character names"
# is then wrong exactly on the most common names (Chanin et al. 2024). StoryWorld's
# `HIERARCHY` lists parent/child label pairs (topic > subtopic, character > each character),
# so absorption can be counted.
#
# **Your turn.** `absorption_rate(parent_fires, child_fires, child_holds)` (three `[n]` bool
# tensors) returns two shares of the tokens where the child label holds: where the parent
# latent is silent, and where it is silent while the child latent fires (absorbed).

# %%
def absorption_rate(parent_fires: Tensor, child_fires: Tensor, child_holds: Tensor
                    ) -> tuple[float, float]:
    """(parent silent, parent silent and child firing) as shares of the child's tokens."""
    # EXERCISE absorption_rate
    n = int(child_holds.sum())
    silent = child_holds & ~parent_fires
    return float(silent.sum()) / n, float((silent & child_fires).sum()) / n
    # END EXERCISE


# %%
checks.interpret.test_absorption_rate(absorption_rate)

# %% [markdown]
# **Expect:** for the most frequent characters, the general name latent is silent on a large
# share of their tokens. Only part of that share is absorbed by a latent that fires on the
# character; the rest goes to latents for names in other positions (splitting by context,
# not absorption). The mean absorbed share is the number to compare between SAEs.

# %%
name_pairs = [(p, c) for p, c in HIERARCHY if p == "entity_type=character"
              and int(labels_flat[:, FEATURES.index(c)].sum()) >= 20]
absorbed = splitting.absorption(acts, labels_flat, FEATURES, name_pairs, all_scores.f1)
for a in absorbed[:6]:
    print(f"{a.child:14s} ({a.n_child_tokens:4d} tokens): the name latent {a.parent_latent} is "
          f"silent on {a.parent_silent:.0%}, absorbed by latent {a.child_latent} on "
          f"{a.absorbed:.0%}")
mean_absorbed = sum(a.absorbed for a in absorbed) / max(len(absorbed), 1)
print(f"mean over {len(absorbed)} characters: absorbed {mean_absorbed:.1%}")


# %% [markdown]
# ## 12. The remedy: Matryoshka SAEs
#
# **Why.** Absorption pays off for a TopK SAE because only the total reconstruction counts.
# A Matryoshka SAE (Bussmann, Nabeshima et al. 2025) also asks every **prefix** of its
# dictionary (the first 96 latents, the first 192, ... all 1536) to reconstruct the input
# on its own. The first latents must then carry general directions such as "a name", since a
# small prefix cannot afford one latent per name, and the later latents add the specifics.
# The loss sums the reconstruction errors of all prefixes (`latents[:, :m] @ W_dec[:m] +
# b_dec` for each prefix size m, the last one being the whole dictionary).
#
# **Your turn.** `matryoshka_loss(x, latents, W_dec, b_dec, prefixes)`: for each m in
# `prefixes` (increasing, the last equal to d_sae), the squared error summed over the input
# dimensions and averaged over tokens; return the sum over prefixes, with gradients.

# %%
def matryoshka_loss(x: Tensor, latents: Tensor, W_dec: Tensor, b_dec: Tensor,
                    prefixes: list[int]) -> Tensor:
    """Sum over prefixes m of mean_tokens ||x - (latents[:, :m] @ W_dec[:m] + b_dec)||^2."""
    # EXERCISE matryoshka_loss
    total = x.new_zeros(())
    for m in prefixes:
        x_hat = latents[:, :m] @ W_dec[:m] + b_dec
        total = total + (x - x_hat).pow(2).sum(-1).mean()
    return total
    # END EXERCISE


# %%
checks.interpret.test_matryoshka_loss(matryoshka_loss)

# %% [markdown]
# The suite ships a Matryoshka SAE trained beside the main TopK SAE (same hook, width, k and
# steps; prefixes 96, 192, 384, 768, 1536). Compare the two on the numbers of this notebook.
#
# **Predict, then reveal.** Which of the two reconstructs better, and which has less
# absorption?
#
# <details><summary>Answer</summary>
#
# The Matryoshka SAE pays for its nested structure with a somewhat worse reconstruction at
# the same L0 (the paper reports the same trade), and in exchange its general latents stay
# on where the specific ones fire. The next cell measures both on this model.
# </details>

# %%
def summary_numbers(sae_acts: feat.LatentActivations) -> dict[str, float]:
    """The numbers this notebook compares SAEs on, from one SAE's activations on `ctx`."""
    f1 = sc.label_scores(sae_acts, labels_flat, FEATURES).f1
    best = f1.max(dim=0).values
    absorbed_pairs = splitting.absorption(sae_acts, labels_flat, FEATURES, name_pairs, f1)
    return {"labels with F1 >= 0.6": float((best >= 0.6).sum()),
            "median best-latent F1": float(best.median()),
            "name-latent F1": float(best[name_column]),
            "mean absorbed": sum(x.absorbed for x in absorbed_pairs) / max(len(absorbed_pairs), 1)}


listing = {p.sae_id: p for p in suite}
matryoshka_id = next((p.sae_id for p in suite if p.role == "matryoshka"), None)
compared = {"TopK": (main_id, acts)}
if matryoshka_id is None:
    print("This copy of the suite has no Matryoshka SAE.")
else:
    mat = pretrained.load_pretrained(RELEASE, matryoshka_id)
    compared["Matryoshka"] = (matryoshka_id, feat.latent_activations(
        model, mat, ctx, activations=residual))
numbers = {}
for name, (sae_id, sae_acts) in compared.items():
    numbers[name] = summary_numbers(sae_acts)
    print(f"{name:10s}: explained variance {listing[sae_id].metrics['explained_variance']:.3f}, "
          f"CE gap {listing[sae_id].metrics['ce_gap']:.4f}; "
          + "; ".join(f"{k} {v:.3f}" for k, v in numbers[name].items()))


# %% [markdown]
# ## 13. How sure are these numbers?
#
# **Why.** Every figure above comes from one training run. Train the same SAE again with
# another seed and many latents change (Paulo & Belrose 2025 found that TopK SAEs trained
# with different seeds share far from all their latents), and so do the scorecard's numbers.
# The suite ships the main SAE trained with two more seeds. A difference between two SAEs is
# worth reporting only when it is larger than the spread between seeds of one.
#
# **Expect:** summary numbers that move between seeds; the printed range is the yardstick for
# section 12's comparison, and each Matryoshka number is marked as beyond or within it. Only a
# difference beyond the range says something about the architecture rather than the seed
# (three seeds make a rough yardstick: a larger study would use more). Then a striking line: only a few percent of the
# main SAE's latents have a counterpart (decoder cosine >= 0.9) in a reseeded SAE. The
# reconstruction is as good in every seed, yet the dictionaries are mostly different: on this
# model many equally good sparse codes exist, and a latent is one choice among them. (The
# Matryoshka SAE of section 12 started from the same initial weights as the main SAE, seed 0,
# so its decoder resembles the main SAE's more than a reseeded TopK SAE's does.)

# %%
seed_ids = [main_id] + [p.sae_id for p in suite if p.role == "seed"]
if len(seed_ids) == 1:
    print("This copy of the suite has no reseeded SAEs.")
else:
    seeded = {i: pretrained.load_pretrained(RELEASE, i) for i in seed_ids}
    per_seed = [numbers["TopK"]] + [
        summary_numbers(feat.latent_activations(model, seeded[i], ctx, progress=False,
                                                activations=residual))
        for i in tqdm(seed_ids[1:], desc="reseeded SAEs: activations and summary numbers")]
    for key in numbers["TopK"]:
        values = [n[key] for n in per_seed]
        line = (f"{key:22s}: TopK seeds {', '.join(f'{v:.3f}' for v in values)} "
                f"(range {max(values) - min(values):.3f})")
        if "Matryoshka" in numbers:
            m = numbers["Matryoshka"][key]
            verdict = "beyond" if m > max(values) or m < min(values) else "within"
            line += f"; Matryoshka {m:.3f}, {verdict} the seeds' range"
        print(line)
    for other in seed_ids[1:]:
        shared = splitting.counterpart_fraction(seeded[main_id].W_dec, seeded[other].W_dec)
        print(f"latents of the main SAE with a counterpart in {other.split('/')[-1]}: "
              f"{shared:.2f}")

# %% [markdown]
# ## 14. On GPT-2
#
# **Why.** GPT-2 has no ground-truth labels, so on it you are back to reading latents, with
# better tools than before. With GPT-2 available (`SAE_COURSE_MODEL=gpt2`), the next cell
# loads Joseph Bloom's `gpt2-small-res-jb` SAE at layer 8 and opens the same dashboard on web
# text, with a link to each latent's page on Neuronpedia, where the same latents are shown
# over far more text (and with an LLM's explanation, which you can now judge).

# %%
if settings.model == "gpt2":
    gpt2 = load_model("gpt2", device=settings.device)
    from sae_course import text as text_lib

    gpt2_hook = "blocks.8.hook_resid_pre"
    jb_sae = pretrained.load_pretrained(pretrained.GPT2_RELEASE, gpt2_hook, device=settings.device)
    gpt2_tokens = text_lib.contexts_for_model(gpt2, settings.scale(ci=8, laptop=64, gpu=256),
                                              128, seed=settings.seed)
    gpt2_acts = feat.latent_activations(gpt2, jb_sae, gpt2_tokens)
    gpt2_dashboard = feature_dashboard(gpt2, jb_sae, gpt2_acts)
else:
    print("Set SAE_COURSE_MODEL=gpt2 (with GPT-2 downloaded) to open the dashboard on "
          "gpt2-small-res-jb.")

# %% [markdown]
# ## Summary
#
# - A latent's top examples are where interpretation starts, not where it ends: quantile
#   samples, the density, the logit lens and, where labels exist, precision and recall say
#   whether a name is right.
# - On StoryWorld, word-level factors have latents of their own, while story-level factors
#   (topic, sentiment, tense) are spread over many latents, and even the residual stream holds
#   them only partly at this layer.
# - Wider SAEs split concepts; absorption makes general latents silent exactly where specific
#   ones fire; Matryoshka SAEs trade a little reconstruction for less of it.
# - One SAE is one sample: compare SAEs only beyond the spread of reseeded runs.
#
# Next, notebook 06 uses these latents to steer the model, and measures what it costs.
