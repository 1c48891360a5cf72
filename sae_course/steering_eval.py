"""Comparing steering methods on one cost axis, with the strength chosen on training prompts.

A *concept* is a StoryWorld factor with a scorer (topic, subtopic, sentiment, tense) and a
*target* one of its values ("space", "positive", "past"). A *method* turns a strength into an
intervention: an SAE latent's decoder row added, an SAE latent clamped, the difference of
means of the residual, a logistic probe's direction, a random direction (all added at the
SAE's hook, scaled so that the strength is the norm of what is added), or a prompt prefix
(sentences of the target concept written before the prompt, the strength being how many).

`evaluate` scores one (method, strength) on a set of neutral prompts: success (the share of
continuations the concept's scorer assigns to the target) and cost (`steering.intervention_cost`
on held-out text, the clean model's perplexity of the continuations, their repetition rate
and their share of well-formed sentences). `sweep` does it for every strength on the training
and the test prompts, and the protocol of AxBench (Wu et al. 2025, arXiv 2501.17148) reads:
choose the strength on the training prompts (`choose_strength`: the best success within a cost
budget), report the test prompts' figures at that strength (`success_at_budget`).

Latents are chosen two ways (Arad, Mueller & Belinkov 2025, arXiv 2505.20063): by *input
score*, the F1 of "the latent fires" for the concept's word label (what Part 05 measures),
and by *output score*, how much adding the latent's decoder row raises the next-token
probability of the target's words on neutral prompts (`output_scores`). Arad et al. score a
latent's output by the rank and probability of its own logit-lens tokens; StoryWorld knows
each concept's words, so the course scores them directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

import sae_course.storyworld as sw
from sae_course import steering as st
from sae_course.activations import harvest
from sae_course.evaluation import kl_divergence, next_token_loss
from sae_course.features import latent_activations
from sae_course.probing import fit_probe
from sae_course.sae import SAE
from sae_course.scorecard import LabelScores, counted_features, label_scores
from sae_course.splice import bos_mask
from sae_course.storyworld.scorers import concept_vocabulary

CONCEPTS: dict[str, tuple[str, ...]] = {
    "topic": tuple(sw.TOPICS),
    "subtopic": tuple(sw.SUBTOPICS),
    "sentiment": ("positive", "negative"),
    "tense": ("present", "past"),
}
"""The steerable concepts and their targets."""

WORD_LABEL = {"topic": "topic_word", "subtopic": "subtopic_word",
              "sentiment": "sentiment_word", "tense": "verb_tense"}
"""The token-level label of each concept: where its words are (for input scores)."""

SEEDS = {"train_prompts": 60_101, "test_prompts": 60_102, "train_cost": 60_103,
         "test_cost": 60_104, "prefix": 60_105, "contexts": 0}
"""Story seeds kept apart: prompts to choose the strength on, prompts to report on, held-out
text for the cost of each, stories the prefixes come from, and the labelled contexts the
directions and input scores are computed from (seed 0, as in Part 05)."""

METHODS = ("sae_input", "sae_output", "sae_clamp", "diff_means", "probe", "random", "prefix")
"""Method names, in the order tables and plots show them."""

METHOD_LABELS = {
    "sae_input": "SAE row (input score)", "sae_output": "SAE row (output score)",
    "sae_clamp": "SAE latent clamped", "diff_means": "difference of means",
    "probe": "probe direction", "random": "random direction", "prefix": "prompt prefix",
}


def check_target(concept: str, target: str) -> None:
    """A clear error for an unknown concept or target."""
    if concept not in CONCEPTS:
        raise ValueError(f"Unknown concept {concept!r}: choose one of {', '.join(CONCEPTS)}.")
    if target not in CONCEPTS[concept]:
        raise ValueError(f"{target!r} is not a value of {concept}: choose one of "
                         f"{', '.join(CONCEPTS[concept])}.")


# ------------------------------------------------------------------------------ data


@dataclass
class SteeringData:
    """What every method and measure of one model + SAE shares.

    `resid` [n, d] and `labels` [n, n_labels] (names `label_names`) are the non-BOS tokens of
    labelled contexts; `input_scores` the SAE's F1 for each word label; `resid_norm` the mean
    norm of a residual vector at the hook (the unit of steering strengths). Continuations are
    sampled with `sample_seed` (the same draw for every method, so two methods differ by their
    steering, not by luck), or greedy when it is None.
    """

    model: Any
    sae: SAE
    hook_name: str
    train_prompts: list[str]
    test_prompts: list[str]
    train_cost_tokens: Tensor
    test_cost_tokens: Tensor
    resid: Tensor
    labels: Tensor
    label_names: list[str]
    input_scores: LabelScores
    resid_norm: float
    new_tokens: int
    sample_seed: int | None = 0
    prefix_seed: int = SEEDS["prefix"]

    def label(self, name: str) -> Tensor:
        """The bool column of label `name` over the rows of `resid`."""
        if name not in self.label_names:
            raise ValueError(f"No label {name!r}: labels are {', '.join(self.label_names)}.")
        return self.labels[:, self.label_names.index(name)]


def steering_data(model: Any, sae: SAE, n_prompts: int = 32, n_contexts: int = 64,
                  context_len: int = 128, n_cost: int = 16, cost_len: int = 64,
                  new_tokens: int = 20, progress: bool = True) -> SteeringData:
    """Build the `SteeringData` of `model` and `sae` (at the SAE's hook), from the seeds of
    `SEEDS`: `n_prompts` training and as many test prompts, `n_cost` held-out contexts of
    `cost_len` tokens for each cost, and `n_contexts` labelled contexts for the directions."""
    hook = st._sae_hook(sae, None)
    names = [f"{c}={t}" for c in CONCEPTS for t in CONCEPTS[c]]
    names += [f"{WORD_LABEL[c]}={t}" for c in CONCEPTS for t in CONCEPTS[c]]
    contexts = sw.labelled_contexts(model.tokenizer, n_contexts, context_len,
                                    seed=SEEDS["contexts"])
    resid_full = harvest(model, contexts.tokens, hook)
    acts = latent_activations(model, sae, contexts, progress=progress, activations=resid_full)
    labels = counted_features(contexts, names)
    word_names = [n for n in names if n.split("=")[0] in WORD_LABEL.values()]
    scores = label_scores(acts, counted_features(contexts, word_names), word_names)
    counted = contexts.story_index.reshape(-1) >= 0
    resid = resid_full.reshape(-1, resid_full.shape[-1])[counted]

    def prompts(seed: int) -> list[str]:
        found = st.neutral_prompts(sw.generate_stories(2 * n_prompts, seed))
        if len(found) < n_prompts:
            found = st.neutral_prompts(sw.generate_stories(8 * n_prompts, seed))
        return found[:n_prompts]

    def cost_tokens(seed: int) -> Tensor:
        return sw.labelled_contexts(model.tokenizer, n_cost, cost_len, seed=seed).tokens

    return SteeringData(
        model=model, sae=sae, hook_name=hook,
        train_prompts=prompts(SEEDS["train_prompts"]), test_prompts=prompts(SEEDS["test_prompts"]),
        train_cost_tokens=cost_tokens(SEEDS["train_cost"]),
        test_cost_tokens=cost_tokens(SEEDS["test_cost"]),
        resid=resid, labels=labels[counted], label_names=names, input_scores=scores,
        resid_norm=float(resid.norm(dim=-1).mean()), new_tokens=new_tokens,
    )


# ------------------------------------------------------------------------------ methods


@dataclass(frozen=True)
class Steer:
    """What one method does at one strength: interventions at hooks, and/or a text prefix
    written before every prompt (and before the held-out text its cost is measured on)."""

    interventions: tuple[Any, ...] = ()
    prefix: str = ""


Method = Callable[[float], Steer]
"""strength -> what to do (strength 0 is always the clean model)."""


def unit(v: Tensor) -> Tensor:
    """v / |v| (a clear error for a zero vector)."""
    norm = v.norm()
    if float(norm) == 0.0:
        raise ValueError("A steering direction of norm 0 has no direction.")
    return v / norm


def add_method(model: Any, hook_name: str, direction: Tensor) -> Method:
    """Add `strength` * unit(direction) at every position but BOS."""
    u = unit(direction.detach().float())
    return lambda s: Steer((st.AddDirection(model, hook_name, u, s),) if s else ())


def clamp_method(model: Any, sae: SAE, latent: int) -> Method:
    """Clamp `latent` to strength / |W_dec[latent]|, so that where the latent was silent the
    clamp adds a vector of norm `strength` (as `add_method` would)."""
    norm = float(sae.W_dec[latent].detach().norm())
    return lambda s: Steer((st.clamp(model, sae, latent, s / norm),) if s else ())


def sentences_of(stories: Sequence[sw.Story]) -> list[str]:
    """Every sentence of `stories`, in order (by the spans' sentence labels)."""
    out = []
    for story in stories:
        start = end = None
        current = None
        for span in story.spans:
            if span.labels["sentence"] != current:
                if start is not None:
                    out.append(story.text[start:end])
                start, current = span.start, span.labels["sentence"]
            end = span.end
        if start is not None:
            out.append(story.text[start:end])
    return out


def concept_sentences(concept: str, target: str, n: int, seed: int = SEEDS["prefix"]
                      ) -> list[str]:
    """`n` distinct StoryWorld sentences the concept's scorer assigns to `target` (from
    stories of that value where the concept is a story factor)."""
    check_target(concept, target)
    scorer = st.SCORERS[concept]
    fixed = {concept: target}
    if concept == "subtopic":
        fixed["topic"] = next(t for t, subs in sw.SUBTOPICS_OF.items() if target in subs)
    found: list[str] = []
    for round_ in range(8):
        for sentence in sentences_of(sw.generate_stories(4 * n + 8, seed + round_, **fixed)):
            if scorer(sentence) == target and sentence not in found:
                found.append(sentence)
                if len(found) == n:
                    return found
    raise RuntimeError(f"Found only {len(found)} sentences of {concept}={target}.")


def prefix_method(concept: str, target: str, max_sentences: int = 4,
                  seed: int = SEEDS["prefix"]) -> Method:
    """Write the first round(strength) sentences of the target concept before the prompt."""
    sentences = concept_sentences(concept, target, max_sentences, seed)

    def steer(s: float) -> Steer:
        n = int(round(s))
        if not 0 <= n <= max_sentences:
            raise ValueError(f"A prefix strength is a number of sentences, 0..{max_sentences};"
                             f" got {s}.")
        return Steer(prefix=" ".join(sentences[:n]))

    return steer


def probe_direction(resid: Tensor, mask: Tensor, max_iter: int = 50) -> Tensor:
    """The direction in which a logistic probe's log-odds for `mask` grow fastest: the
    probe is fitted on standardised residuals, so this is (w_1 - w_0) / std, [d]."""
    probe = fit_probe(resid, mask.long(), n_classes=2, max_iter=max_iter)
    return (probe.weight[:, 1] - probe.weight[:, 0]) / probe.std


def best_latent(scores: Tensor | LabelScores, label: str | None = None) -> int:
    """The latent with the highest score: `scores` [d_sae], or the F1 column of `label`."""
    if isinstance(scores, LabelScores):
        scores = scores.f1[:, scores.names.index(label)]
    return int(torch.nan_to_num(scores, nan=-math.inf).argmax())


def methods_for(data: SteeringData, concept: str, target: str,
                output: Tensor | None = None, random_seed: int = 0) -> dict[str, Method]:
    """Every method of `METHODS` for one target. `output`: output scores [d_sae] of the
    target (from `output_scores`), needed for "sae_output" (left out without it)."""
    check_target(concept, target)
    model, sae, hook = data.model, data.sae, data.hook_name
    latent_in = best_latent(data.input_scores, f"{WORD_LABEL[concept]}={target}")
    mask = data.label(f"{concept}={target}")
    methods: dict[str, Method] = {
        "sae_input": add_method(model, hook, sae.W_dec[latent_in]),
    }
    if output is not None:
        methods["sae_output"] = add_method(model, hook, sae.W_dec[best_latent(output)])
    methods["sae_clamp"] = clamp_method(model, sae, latent_in if output is None
                                        else best_latent(output))
    methods["diff_means"] = add_method(model, hook, st.difference_of_means(data.resid, mask))
    methods["probe"] = add_method(model, hook, probe_direction(data.resid, mask))
    methods["random"] = add_method(model, hook,
                                   st.random_direction(sae.W_dec[latent_in], random_seed))
    methods["prefix"] = prefix_method(concept, target, seed=data.prefix_seed)
    return methods


# ------------------------------------------------------------------------------ output score


@torch.no_grad()
def output_scores(model: Any, sae: SAE, prompts: Sequence[str], concept: str,
                  strength: float, latents: Tensor | None = None, batch_size: int = 256,
                  progress: bool = True) -> Tensor:
    """[d_sae, n_targets]: for each latent, the mean rise (over `prompts`) of the next-token
    probability of each target's words at the prompt's last position when
    strength * unit(W_dec[latent]) is added at the SAE's hook (every position but BOS).
    Targets in the order of `CONCEPTS[concept]`. `latents`: score only these candidates
    (the others get -inf); default all."""
    if concept not in CONCEPTS:
        raise ValueError(f"Unknown concept {concept!r}: choose one of {', '.join(CONCEPTS)}.")
    hook = st._sae_hook(sae, None)
    members = _target_members(model, concept)  # [vocab, n_targets]
    index = torch.arange(sae.cfg.d_sae) if latents is None else st._latent_index(sae, latents)
    rows = sae.W_dec.detach().float()[index]
    rows = rows / rows.norm(dim=-1, keepdim=True)
    total = torch.zeros(len(index), members.shape[1])
    bos_id = model.tokenizer.bos_token_id
    for prompt in tqdm(prompts, desc="output scores", disable=not progress):
        tokens = model.to_tokens(prompt, prepend_bos=True)
        clean = model(tokens)[0, -1].softmax(-1) @ members
        not_bos = ~bos_mask(tokens, bos_id)[0]
        for start in range(0, len(index), batch_size):
            chunk = rows[start:start + batch_size]

            def add(x: Tensor, hook: Any, chunk: Tensor = chunk, keep: Tensor = not_bos
                    ) -> Tensor:
                return x + strength * chunk[:, None, :] * keep[None, :, None]

            batch = tokens.expand(len(chunk), -1)
            logits = model.run_with_hooks(batch, fwd_hooks=[(hook, add)])
            total[start:start + len(chunk)] += logits[:, -1].softmax(-1) @ members - clean
    scores = torch.full((sae.cfg.d_sae, members.shape[1]), -math.inf)
    scores[index] = total / len(prompts)
    return scores


def target_output_scores(data: SteeringData, concept: str, target: str, n_candidates: int,
                         n_prompts: int = 4, progress: bool = True) -> Tensor:
    """The output scores [d_sae] of one target, what `methods_for(..., output=...)` takes:
    `output_scores` at half the mean residual norm on the first `n_prompts` training prompts,
    for the `n_candidates` latents of best input F1 for the target's words (-inf elsewhere)."""
    check_target(concept, target)
    f1 = data.input_scores.f1[:, data.input_scores.names.index(f"{WORD_LABEL[concept]}={target}")]
    top = f1.topk(min(n_candidates, len(f1))).indices
    scores = output_scores(data.model, data.sae, data.train_prompts[:n_prompts], concept,
                           0.5 * data.resid_norm, latents=top, progress=progress)
    return scores[:, CONCEPTS[concept].index(target)]


def _target_members(model: Any, concept: str) -> Tensor:
    """[vocab, n_targets] 1 where a token is " word" (or " Word") of a target's vocabulary."""
    targets = CONCEPTS[concept]
    members = torch.zeros(model.cfg.d_vocab, len(targets))
    for word, value in concept_vocabulary(concept).items():
        if value not in targets:
            continue
        for form in (" " + word, " " + word.capitalize()):
            ids = model.to_tokens(form, prepend_bos=False)[0]
            if len(ids) == 1:
                members[int(ids[0]), targets.index(value)] = 1.0
    return members


# ------------------------------------------------------------------------------ measures


@dataclass(frozen=True)
class SteeringPoint:
    """One method at one strength on one prompt set ("train" or "test")."""

    method: str
    strength: float
    split: str
    success: float
    ce_increase: float
    kl: float
    perplexity: float
    repetition: float
    well_formed: float
    texts: tuple[str, ...] = ()


@torch.no_grad()
def prefix_cost(model: Any, tokens: Tensor, prefix: str, batch_size: int = 16
                ) -> st.InterventionCost:
    """The `InterventionCost` of writing `prefix` after BOS before held-out text `tokens`:
    the same next-token predictions (every token after the first) compared with and
    without the prefix in front."""
    pre = model.to_tokens(prefix, prepend_bos=False, move_to_device=False)[0]
    bos_id = model.tokenizer.bos_token_id
    ce_clean = ce_steered = kl = 0.0
    n = 0
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start:start + batch_size].to(model.cfg.device)
        with_prefix = torch.cat([batch[:, :1], pre.expand(len(batch), -1).to(batch.device),
                                 batch[:, 1:]], dim=1)
        clean = model(batch)
        steered = model(with_prefix)[:, len(pre):]
        predicted = ~bos_mask(batch, bos_id)[:, :-1]
        ce_clean += float(next_token_loss(clean, batch)[predicted].double().sum())
        ce_steered += float(next_token_loss(steered, batch)[predicted].double().sum())
        kl += float(kl_divergence(clean[:, :-1], steered[:, :-1])[predicted].double().sum())
        n += int(predicted.sum())
    return st.InterventionCost(ce_clean / n, ce_steered / n, kl / n, n)


def evaluate(data: SteeringData, concept: str, target: str, steer: Steer, split: str,
             method: str = "", strength: float = 0.0) -> SteeringPoint:
    """Success and cost of `steer` on the `split` prompts ("train" or "test")."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    check_target(concept, target)
    model = data.model
    prompts = data.train_prompts if split == "train" else data.test_prompts
    cost_tokens = data.train_cost_tokens if split == "train" else data.test_cost_tokens
    written = [f"{steer.prefix} {p}" if steer.prefix else p for p in prompts]
    conts = st.continuations(model, written, data.new_tokens, list(steer.interventions),
                             seed=data.sample_seed)
    texts = [model.tokenizer.decode(c) for c in conts]
    if steer.prefix and steer.interventions:
        raise ValueError("A Steer is a prefix or interventions, not both.")
    if steer.prefix:
        cost = prefix_cost(model, cost_tokens, steer.prefix)
    elif steer.interventions:
        cost = st.intervention_cost(model, cost_tokens, list(steer.interventions))
    else:
        cost = st.InterventionCost(0.0, 0.0, 0.0, 0)
    prompt_tokens = [model.to_tokens(p, prepend_bos=True, move_to_device=False)[0]
                     for p in prompts]
    return SteeringPoint(
        method=method, strength=strength, split=split,
        success=st.success_rate(texts, concept, target), ce_increase=cost.ce_increase,
        kl=cost.kl, perplexity=st.continuation_perplexity(model, prompt_tokens, conts),
        repetition=sum(map(st.repetition_rate, texts)) / max(len(texts), 1),
        well_formed=st.well_formed_fraction(texts), texts=tuple(texts),
    )


def sweep(data: SteeringData, concept: str, target: str, methods: dict[str, Method],
          strengths: dict[str, Sequence[float]], splits: Sequence[str] = ("train", "test"),
          progress: bool = True) -> list[SteeringPoint]:
    """Every method at each of its strengths (strength 0, the clean model, is measured once
    per split and listed under every method), on each split."""
    missing = [m for m in methods if m not in strengths]
    if missing:
        raise ValueError(f"No strengths for method(s) {missing}: pass strengths[name] = [...].")
    todo = [(m, s, sp) for sp in splits for m in methods for s in strengths[m] if s != 0]
    points: list[SteeringPoint] = []
    clean = {sp: evaluate(data, concept, target, Steer(), sp, "clean", 0.0) for sp in splits}
    for sp in splits:
        points += [replace(clean[sp], method=m) for m in methods]
    for m, s, sp in tqdm(todo, desc=f"steering {concept}={target}", disable=not progress):
        points.append(evaluate(data, concept, target, methods[m](s), sp, m, float(s)))
    return points


def choose_strength(points: Sequence[SteeringPoint], method: str, budget: float) -> float:
    """The strength of `method` with the highest success on the *training* prompts among
    those whose CE increase is within `budget` (ties: the cheaper one). Strength 0 (the clean
    model) costs nothing, so a sweep that includes it always has an answer; in one that does
    not and where nothing fits, the weakest strength swept."""
    train = [p for p in points if p.method == method and p.split == "train"]
    if not train:
        raise ValueError(f"No training points for method {method!r}.")
    allowed = [p for p in train if p.ce_increase <= budget] or [min(train,
                                                                    key=lambda p: p.strength)]
    return min(allowed, key=lambda p: (-p.success, p.ce_increase)).strength


def point(points: Sequence[SteeringPoint], method: str, strength: float, split: str
          ) -> SteeringPoint:
    """The point of `method` at `strength` on `split`."""
    for p in points:
        if p.method == method and p.split == split and p.strength == strength:
            return p
    raise LookupError(f"No point for {method} at strength {strength} on {split}.")


def success_at_budget(points: Sequence[SteeringPoint], method: str, budget: float
                      ) -> SteeringPoint:
    """The test-prompt point of `method` at the strength chosen on the training prompts."""
    return point(points, method, choose_strength(points, method, budget), "test")


def cost_to_reach(points: Sequence[SteeringPoint], method: str, level: float = 0.5,
                  split: str = "test") -> float:
    """The lowest CE increase at which `method` reaches success `level` on `split`
    (inf when no strength swept reaches it)."""
    costs = [p.ce_increase for p in points
             if p.method == method and p.split == split and p.success >= level]
    return min(costs) if costs else math.inf


def pareto_front(points: Sequence[SteeringPoint]) -> list[SteeringPoint]:
    """The points no other point beats: none has at least their success at no more cost
    and is strictly better in one. Sorted by cost."""
    front = [p for p in points
             if not any(q.success >= p.success and q.ce_increase <= p.ce_increase
                        and (q.success > p.success or q.ce_increase < p.ce_increase)
                        for q in points)]
    return sorted(front, key=lambda p: (p.ce_increase, p.success))


@dataclass(frozen=True)
class TableRow:
    concept: str
    target: str
    method: str
    strength: float
    success: float
    ce_increase: float
    cost_to_half: float
    clean_success: float


def steering_table(points: Sequence[SteeringPoint], concept: str, target: str,
                   budget: float, level: float = 0.5) -> list[TableRow]:
    """Per method: the test success at the strength chosen on training prompts within
    `budget`, its CE increase, and the cost at which test success reaches `level`."""
    rows = []
    for method in dict.fromkeys(p.method for p in points):
        chosen = success_at_budget(points, method, budget)
        clean = point(points, method, 0.0, "test")
        rows.append(TableRow(concept, target, method, chosen.strength, chosen.success,
                             chosen.ce_increase, cost_to_reach(points, method, level),
                             clean.success))
    return rows


def _cost(x: float) -> float:
    """A CE increase for printing: below 0.0005 nats in size it prints as 0.000, not -0.000."""
    return x if abs(x) >= 0.0005 else 0.0


def format_table(rows: Sequence[TableRow], budget: float, level: float = 0.5) -> str:
    """A plain-text table of `steering_table` rows."""
    lines = [f"{'target':18s} {'method':24s} {'strength':>8s} {'success':>7s} {'CE+':>6s} "
             f"{f'CE+ to {level:g}':>10s}   (budget CE+ <= {budget:g}; success on held-out "
             f"prompts)"]
    for r in rows:
        reach = "never" if math.isinf(r.cost_to_half) else f"{_cost(r.cost_to_half):.3f}"
        name = METHOD_LABELS.get(r.method, r.method)
        lines.append(f"{r.concept + '=' + r.target:18s} {name:24s} {r.strength:8.2f} "
                     f"{r.success:7.2f} {_cost(r.ce_increase):6.3f} {reach:>10s}")
    return "\n".join(lines)
