"""Which SAE latents does a behaviour rest on? Attribution, checked against ablation, and a
fact edit built from it.

Attribution (activation times gradient, as in Marks et al. 2024): the SAE is spliced in error
mode, x = x_hat + (x - x_hat).detach(), so the forward pass is exactly the clean one, yet the
gradient of a scalar metric M reaches every latent z_i through the decoder. Removing latent i
at every position changes x by -z_i W_dec[i]; to first order M then drops by

    attribution_i = sum over positions (BOS left out) of z_i * dM/dz_i.

One backward pass gives that estimate for all latents at once. `ablation_effects` measures the
real drop (the latent zeroed by `steering.ablate`, error term kept, one forward pass per
latent), and `correlation` says how well the estimate ranks and scales it.

The metric used throughout is a fact of StoryWorld: after "Mara lives in", the logit of her
city minus the mean logit of the other cities (`answer_metric`). The log-probability of the
city saturates (the model is sure, log p is about -0.001), which leaves gradients near zero;
the logit difference does not.

Fact editing (`city_edit`, `measure_edit`) uses the attribution in the simplest way we could
state in one sentence: zero the k latents with the highest attribution toward the true city
on the character's own home prompts, and clamp the k latents with the highest attribution
toward the new city, on the home prompts of the characters who do live there, to their mean
activation where they fire on those prompts. Both edits act at every position but BOS, so
they also act on the prompts about her job and pet; `measure_edit` reports both what the edit
causes (the new city is said) and what it leaves alone (job and pet still said), after
RAVEL's cause and isolation. At layer 2 the latents found this way are mostly those of the
characters' names: the edit moves her city by borrowing part of a neighbour's identity, which
the pet's name (and the next sentence's subject) give away; `pet_name_kept` measures it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sae_course import steering as st
from sae_course.sae import SAE
from sae_course.splice import Splice
from sae_course.storyworld.grammar import article
from sae_course.storyworld.world import JOBS, PET_SPECIES, World

Metric = Callable[[Tensor], Tensor]
"""logits [1, pos, vocab] -> a scalar tensor (differentiable)."""

RELATIONS = ("home", "job", "pet")

HOME_TEMPLATES = (
    "{name} lives in",
    "{name} lived in",
    "{name} is {a_job} {job}. {name} lives in",
    "{name} has {a_pet} {pet} called {pet_name}. {name} lived in",
)
"""Prompts whose next word is the character's city (the stories' fact sentences)."""

JOB_TEMPLATES = ("{name} is a", "{name} was a")
"""Prompts whose next word is the character's job (every job takes "a")."""

PET_TEMPLATES = ("{name} has a", "{name} had a")
"""Prompts whose next word is the character's pet species (every species takes "a")."""


# ------------------------------------------------------------------------------ facts


def _character(world: World, name: str) -> Any:
    if name not in world.characters:
        raise ValueError(f"No character {name!r} in this world; try one of "
                         f"{', '.join(world.names[:5])}, ...")
    return world.characters[name]


def fact_prompts(world: World, name: str, relation: str) -> list[str]:
    """The prompts that ask for one fact of `name`: relation "home", "job" or "pet"."""
    c = _character(world, name)
    templates = {"home": HOME_TEMPLATES, "job": JOB_TEMPLATES, "pet": PET_TEMPLATES}
    if relation not in templates:
        raise ValueError(f"Unknown relation {relation!r}: choose one of {RELATIONS}.")
    return [t.format(name=name, job=c.job, a_job=article(c.job), pet=c.pet_species,
                     a_pet=article(c.pet_species), pet_name=c.pet_name)
            for t in templates[relation]]


def fact_answer(world: World, name: str, relation: str) -> str:
    """The word that completes `relation` for `name` (her city, job or pet species)."""
    c = _character(world, name)
    answers = {"home": c.city, "job": c.job, "pet": c.pet_species}
    if relation not in answers:
        raise ValueError(f"Unknown relation {relation!r}: choose one of {RELATIONS}.")
    return answers[relation]


def candidates(world: World, relation: str) -> list[str]:
    """Every word that could complete `relation`: all cities, jobs or pet species."""
    options = {"home": world.cities, "job": list(JOBS), "pet": list(PET_SPECIES)}
    if relation not in options:
        raise ValueError(f"Unknown relation {relation!r}: choose one of {RELATIONS}.")
    return list(options[relation])


def word_token(model: Any, word: str) -> int:
    """The token id of " word" (one token, as every StoryWorld city, job and species is)."""
    ids = model.to_tokens(" " + word, prepend_bos=False)[0]
    if len(ids) != 1:
        raise ValueError(f"{word!r} is {len(ids)} tokens ({model.to_str_tokens(' ' + word)}); "
                         "answer_metric needs a one-token answer.")
    return int(ids[0])


def answer_metric(model: Any, answer: str, options: Sequence[str]) -> Metric:
    """M(logits) = logit of `answer` minus the mean logit of the other `options`, at the last
    position: how strongly the model prefers the true object over its rivals."""
    target = word_token(model, answer)
    others = [word_token(model, w) for w in options if w != answer]
    if not others:
        raise ValueError("answer_metric needs at least one option besides the answer.")
    others_t = torch.tensor(others)

    def metric(logits: Tensor) -> Tensor:
        last = logits[..., -1, :]
        return (last[..., target] - last[..., others_t.to(last.device)].mean(-1)).sum()

    return metric


# ------------------------------------------------------------------------------ attribution


def _as_token_list(model: Any, prompts: str | Tensor | Sequence[str | Tensor]) -> list[Tensor]:
    if isinstance(prompts, str | Tensor):
        prompts = [prompts]
    if len(prompts) == 0:
        raise ValueError("No prompts given: pass a string, a token tensor, or a list of them.")
    out = []
    for p in prompts:
        if isinstance(p, str):
            p = model.to_tokens(p, prepend_bos=True)
        elif not isinstance(p, Tensor) or p.is_floating_point():
            kind = f"a {p.dtype} tensor" if isinstance(p, Tensor) else type(p).__name__
            raise ValueError(f"A prompt must be a string or token ids, got {kind}.")
        if p.ndim == 1:
            p = p[None]
        if p.ndim != 2 or p.shape[0] != 1:
            raise ValueError(f"Give prompts one at a time ([pos] or [1, pos] token ids), got "
                             f"shape {tuple(p.shape)}.")
        out.append(p.to(model.cfg.device))
    return out


def _metrics(prompts: Sequence[Any], metric: Metric | Sequence[Metric]) -> list[Metric]:
    if callable(metric):
        return [metric] * len(prompts)
    metrics = list(metric)
    if len(metrics) != len(prompts):
        raise ValueError(f"{len(metrics)} metrics for {len(prompts)} prompts: give one metric, "
                         "or one per prompt.")
    return metrics


@dataclass
class Attribution:
    """Per-latent attribution [d_sae] (summed over prompts and non-BOS positions), the metric
    summed over prompts, and the latents' activations summed the same way."""

    scores: Tensor
    metric: float
    activations: Tensor

    def top(self, n: int) -> Tensor:
        """The `n` latents of largest |attribution|, largest first."""
        return self.scores.abs().topk(n).indices


def attribute(model: Any, sae: SAE, prompts: str | Tensor | Sequence[str | Tensor],
              metric: Metric | Sequence[Metric], hook_name: str | None = None) -> Attribution:
    """Activation x gradient of `metric` for every latent of `sae`, spliced in error mode at
    `hook_name` (default: the SAE's own hook), so the forward pass is the clean one.

    `prompts`: a string, BOS-led token ids, or a list of them (each run on its own, their
    attributions summed); `metric`: one function of the logits, or one per prompt. The BOS
    position is left out (the splice does not touch it, so its latents get no gradient).
    """
    hook = st._sae_hook(sae, hook_name)
    tokens = _as_token_list(model, prompts)
    metrics = _metrics(tokens, metric)
    scores = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    acts = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    total = 0.0
    splice = Splice(model, sae, hook, mode="error")
    for toks, m in zip(tokens, metrics, strict=True):
        with torch.enable_grad(), model.hooks(fwd_hooks=splice.fwd_hooks):
            value = m(model(toks))
            if not isinstance(value, Tensor) or value.numel() != 1:
                raise ValueError("The metric must return one number (a scalar tensor).")
            latents = splice.latents
            assert latents is not None
            (grad,) = torch.autograd.grad(value, latents)
        keep = ~splice.bos if splice.bos is not None else torch.ones(latents.shape[:2], dtype=bool)
        z = latents.detach() * keep[..., None]
        scores += (z * grad).sum((0, 1)).double().cpu()
        acts += z.sum((0, 1)).double().cpu()
        total += float(value.detach())
    return Attribution(scores, total, acts)


@torch.no_grad()
def metric_value(model: Any, prompts: str | Tensor | Sequence[str | Tensor],
                 metric: Metric | Sequence[Metric], interventions: Sequence[Any] = ()) -> float:
    """The metric summed over `prompts`, with `interventions` on (none: the clean model)."""
    tokens = _as_token_list(model, prompts)
    metrics = _metrics(tokens, metric)
    with st.intervening(model, interventions):
        return sum(float(m(model(t))) for t, m in zip(tokens, metrics, strict=True))


def ablation_effects(model: Any, sae: SAE, prompts: str | Tensor | Sequence[str | Tensor],
                     metric: Metric | Sequence[Metric], latents: Sequence[int] | Tensor,
                     hook_name: str | None = None) -> Tensor:
    """The true drop of the metric, M(clean) - M(latent i zeroed), for each of `latents` [n],
    each ablated alone at every position but BOS, error term kept (`steering.ablate`): what
    `attribute` estimates to first order."""
    index = st._latent_index(sae, latents)
    clean = metric_value(model, prompts, metric)
    effects = [clean - metric_value(model, prompts, metric,
                                    [st.ablate(model, sae, int(i), hook_name)]) for i in index]
    return torch.tensor(effects, dtype=torch.float64)


def _ranks(x: Tensor) -> Tensor:
    """Ranks 0..n-1 of x, ties given their mean rank."""
    order = x.argsort()
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = torch.arange(len(x), dtype=torch.float64)
    for value in x.unique():
        tie = x == value
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def correlation(x: Tensor, y: Tensor) -> tuple[float, float]:
    """(Pearson, Spearman) correlation of two 1-d tensors of the same length (at least 3)."""
    x, y = torch.as_tensor(x).double().reshape(-1), torch.as_tensor(y).double().reshape(-1)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"correlation needs two series of the same length >= 3, got "
                         f"{len(x)} and {len(y)}.")

    def pearson(a: Tensor, b: Tensor) -> float:
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    return pearson(x, y), pearson(_ranks(x), _ranks(y))


@dataclass
class AttributionCheck:
    """Attribution vs the true ablation effect on the top-`n` attributed latents."""

    latents: Tensor
    attribution: Tensor
    ablation: Tensor
    pearson: float
    spearman: float


def check_attribution(model: Any, sae: SAE, prompts: str | Tensor | Sequence[str | Tensor],
                      metric: Metric | Sequence[Metric], n: int = 20,
                      hook_name: str | None = None) -> AttributionCheck:
    """Attribute, ablate the `n` latents of largest |attribution| one by one, and correlate."""
    if n < 3:
        raise ValueError(f"n={n}: a correlation needs at least 3 latents.")
    attr = attribute(model, sae, prompts, metric, hook_name)
    top = attr.top(n)
    effects = ablation_effects(model, sae, prompts, metric, top, hook_name)
    r, rho = correlation(attr.scores[top], effects)
    return AttributionCheck(top, attr.scores[top], effects, r, rho)


# ------------------------------------------------------------------------------ fact editing


def home_metrics(model: Any, world: World, city: str, prompts: Sequence[str]) -> list[Metric]:
    """`answer_metric` for `city` among all cities, once per prompt."""
    return [answer_metric(model, city, world.cities)] * len(prompts)


@dataclass
class CityEdit:
    """A fact edit: `removed` latents zeroed and `added` latents clamped to `values`."""

    name: str
    new_city: str
    removed: Tensor
    added: Tensor
    values: Tensor

    def interventions(self, model: Any, sae: SAE, hook_name: str | None = None) -> list[Any]:
        """The splices that carry out the edit (one splice: ablation and clamp together)."""
        latents = torch.cat([self.removed, self.added])
        values = torch.cat([torch.zeros(len(self.removed)), self.values])
        return [st.clamp(model, sae, latents, values, hook_name)]


def city_edit(model: Any, sae: SAE, world: World, name: str, new_city: str, k: int = 4,
              hook_name: str | None = None) -> CityEdit:
    """Build the edit "<name> lives in <new_city>" (see the module docstring): zero the `k`
    latents most attributed toward her true city on her home prompts, and clamp the `k`
    latents most attributed toward `new_city` on the home prompts of the characters who live
    there to their mean activation where they fire on those prompts (`active_means`)."""
    true_city = fact_answer(world, name, "home")
    if new_city not in world.cities:
        raise ValueError(f"Unknown city {new_city!r}: choose one of {', '.join(world.cities)}.")
    if new_city == true_city:
        raise ValueError(f"{name} already lives in {new_city}: pick another city.")
    if k < 1:
        raise ValueError(f"k={k}: edit at least one latent.")
    own = fact_prompts(world, name, "home")
    removed = attribute(model, sae, own, home_metrics(model, world, true_city, own),
                        hook_name).scores.topk(k).indices
    donors = [n for n, c in world.characters.items() if c.city == new_city and n != name]
    if not donors:
        raise ValueError(f"Nobody else lives in {new_city}: no prompts to find its latents on.")
    donor_prompts = [p for d in donors for p in fact_prompts(world, d, "home")]
    donor = attribute(model, sae, donor_prompts,
                      home_metrics(model, world, new_city, donor_prompts), hook_name)
    added = donor.scores.topk(k).indices
    removed = removed[~torch.isin(removed, added)]  # a latent is either zeroed or clamped
    values = active_means(model, sae, donor_prompts, added, hook_name)
    return CityEdit(name, new_city, removed, added, values)


@torch.no_grad()
def active_means(model: Any, sae: SAE, prompts: Sequence[str], latents: Tensor,
                 hook_name: str | None = None) -> Tensor:
    """The mean activation of each of `latents` over the non-BOS positions of `prompts` where
    it fires (0 for a latent that never fires there): the value it takes when on."""
    hook = st._sae_hook(sae, hook_name)
    total = torch.zeros(len(latents), dtype=torch.float64)
    count = torch.zeros(len(latents), dtype=torch.float64)
    for toks in _as_token_list(model, list(prompts)):
        _, cache = model.run_with_cache(toks, names_filter=[hook])
        z = sae.encode(cache[hook][0, 1:].to(sae.device, sae.dtype))[:, latents].double().cpu()
        total += z.sum(0)
        count += (z > 0).sum(0)
    return (total / count.clamp(min=1)).float()


@dataclass
class EditResult:
    """Cause: the share of her home prompts whose greedy continuation starts with the new
    city. Isolation: the share of her job and pet prompts whose continuation still starts
    with her job or pet species. `pet_name_kept`: the share of her pet prompts whose
    continuation still names her pet
    (a stricter isolation: the edit can swap in the identity of the characters it took the
    city latents from, and the pet's name shows it first). `*_before`: the same shares
    without the edit (the true city for cause)."""

    cause: float
    isolation: float
    cause_before: float
    isolation_before: float
    pet_name_kept: float
    pet_name_kept_before: float
    texts: dict[str, str]


def _says(model: Any, prompts: Sequence[str], words: Sequence[str], interventions: Sequence[Any],
          max_new_tokens: int, texts: dict[str, str], first: bool = True) -> float:
    """The share of prompts whose greedy continuation's first word (`first`), or any word, is
    the prompt's word."""
    hits = 0
    for prompt, word in zip(prompts, words, strict=True):
        tokens = model.to_tokens(prompt, prepend_bos=True)
        out = st.generate(model, tokens, max_new_tokens, interventions)
        text = model.to_string(out[0, tokens.shape[1]:])
        texts[prompt] = text
        said = re.findall(r"[A-Za-z]+", text)
        hits += said[:1] == [word] if first else word in said
    return hits / len(prompts)


def measure_edit(model: Any, world: World, name: str, new_city: str,
                 interventions: Sequence[Any], max_new_tokens: int = 4) -> EditResult:
    """The cause and isolation (see `EditResult`) of `interventions` on `name`'s facts, from
    greedy continuations of `max_new_tokens` tokens."""
    if new_city not in world.cities:
        raise ValueError(f"Unknown city {new_city!r}: choose one of {', '.join(world.cities)}.")
    home = fact_prompts(world, name, "home")
    others = fact_prompts(world, name, "job") + fact_prompts(world, name, "pet")
    other_words = ([fact_answer(world, name, "job")] * len(JOB_TEMPLATES)
                   + [fact_answer(world, name, "pet")] * len(PET_TEMPLATES))
    before: dict[str, str] = {}
    texts: dict[str, str] = {}
    cause_before = _says(model, home, [fact_answer(world, name, "home")] * len(home), (),
                         max_new_tokens, before)
    isolation_before = _says(model, others, other_words, (), max_new_tokens, before)
    cause = _says(model, home, [new_city] * len(home), interventions, max_new_tokens, texts)
    isolation = _says(model, others, other_words, interventions, max_new_tokens, texts)
    pets = fact_prompts(world, name, "pet")
    pet_name = [_character(world, name).pet_name] * len(pets)
    kept_before = _says(model, pets, pet_name, (), max_new_tokens, {}, first=False)
    kept = _says(model, pets, pet_name, interventions, max_new_tokens, {}, first=False)
    return EditResult(cause, isolation, cause_before, isolation_before, kept, kept_before,
                      texts)


def edit_report(model: Any, sae: SAE, world: World, pairs: Sequence[tuple[str, str]],
                k: int = 4, hook_name: str | None = None,
                max_new_tokens: int = 4) -> dict[str, float]:
    """`city_edit` + `measure_edit` for each (name, new city) pair; the mean of each share."""
    if not pairs:
        raise ValueError("No (name, new city) pairs given.")
    results = []
    for name, new_city in pairs:
        edit = city_edit(model, sae, world, name, new_city, k, hook_name)
        results.append(measure_edit(model, world, name, new_city,
                                    edit.interventions(model, sae, hook_name), max_new_tokens))
    keys = ("cause", "isolation", "cause_before", "isolation_before", "pet_name_kept",
            "pet_name_kept_before")
    return {key: sum(getattr(r, key) for r in results) / len(results) for key in keys}
