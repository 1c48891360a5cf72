"""Does a model behave as if it tracked each StoryWorld factor? The model card's table.

Each factor is tested with minimal pairs on fresh stories: at a slot where the factor decides
the next word (a sentiment adjective, a topic noun, a verb's tense or number, a pronoun, the
next number of a count), the true text is compared with the same text where only that word is
swapped for one the factor rules out (an adjective of the other polarity, a noun of another
topic, the other tense...). The model passes the slot when it gives the true text the higher
log-probability (over the swapped word and the token after it, so a word that is a prefix of
its rival gets no edge). Story-level factors are only tested after the story has shown them.

Facts are tested by recall: after "Mara is", "Mara lives in", "Mara has", and "... travels to
Lyon, in", the true object must score highest among every object of that relation (every job,
city, pet species or country), for common and for rare entities (the Zipf tail) separately.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sae_course.storyworld.grammar import (
    ALL_VERBS,
    BE_FORMS,
    Span,
    Story,
    article,
    generate_stories,
)
from sae_course.storyworld.labels import bos_id
from sae_course.storyworld.vocabulary import (
    NUMBER_WORDS,
    SENTIMENT_ADJS,
    SENTIMENT_ADVERBS,
    SENTIMENT_VERBS,
    SUBTOPICS_OF,
    TOPIC_DATA,
    TOPICS,
)
from sae_course.storyworld.world import JOBS, PET_SPECIES, WORLD, World

THRESHOLDS: dict[str, float] = {
    "sentiment": 0.9, "topic": 0.95, "subtopic": 0.95, "tense": 0.95,
    "number agreement": 0.95, "pronoun": 0.95, "fact recall (common)": 0.95,
    "fact recall (rare)": 0.95, "counting": 0.9,
}
"""Each row's pass threshold: the share of slots (or facts) the model must get right."""

BEHAVIOUR_SEED = 777_001
"""The story seed of the behavioural test: not one of the training script's data seeds."""
N_COMMON, N_RARE = 20, 60
"""Fact recall is reported for the 20 most common and the 60 rarest characters (and the 12
most common and 12 rarest cities for their countries)."""


@dataclass(frozen=True)
class BehaviourRow:
    """One row of the behavioural table."""

    factor: str
    score: float
    n: int
    threshold: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.score >= self.threshold


# --------------------------------------------------------------------------------------------
# Minimal pairs
# --------------------------------------------------------------------------------------------


def _verb_form(forms: tuple[str, str, str], tense: str, plural: bool) -> str:
    return forms[2] if tense == "past" else forms[0] if plural else forms[1]


def _same_case(word: str, like: str) -> str:
    return word[0].upper() + word[1:] if like[0].isupper() else word


def _role_words(role: str, topic: str, subtopic: str | None, lab: dict[str, Any]) -> list[str]:
    """The word forms that could fill a topical slot of `role` in (topic, subtopic)."""
    t = TOPIC_DATA[topic]
    if role == "agent":
        return [pl if lab["plural"] else sg for sg, pl in t.agents]
    if role == "place":
        return list(t.places)
    if role == "topic_adj":
        return list(t.adjs)
    s = t.subtopics[subtopic] if subtopic else None
    if s is None:
        return []
    if role == "noun":
        return [pl if lab["plural"] else sg for sg, pl in s.nouns]
    if role == "mass":
        return list(s.mass)
    if role == "verb":
        return [_verb_form(v, lab["verb_tense"], lab["plural"]) for v in s.verbs]
    if role == "adj":
        return list(s.adjs)
    return []


def _alternative(factor: str, span: Span, rng: random.Random) -> str | None:
    """The word to swap in for `span` to test `factor`, or None when the slot does not test it."""
    lab, word = span.labels, span.text
    if factor == "sentiment":
        pol = lab["sentiment_word"]
        other = "negative" if pol == "positive" else "positive"
        if lab["pos"] == "adj":
            return rng.choice(SENTIMENT_ADJS[other])
        if lab["pos"] == "adv":
            return rng.choice(SENTIMENT_ADVERBS[other])
        if lab["pos"] == "verb":
            v = rng.choice(SENTIMENT_VERBS[other])
            return _verb_form(v, lab["verb_tense"], lab["plural"])
        return None
    if factor == "topic":
        role = lab["role"]
        other = rng.choice([t for t in TOPICS if t != lab["topic_word"]])
        sub = rng.choice(SUBTOPICS_OF[other]) if lab["subtopic_word"] else None
        words = _role_words(role, other, sub, lab)
        return rng.choice(words) if words else None
    if factor == "subtopic":
        siblings = [s for s in SUBTOPICS_OF[lab["topic_word"]] if s != lab["subtopic_word"]]
        words = _role_words(lab["role"], lab["topic_word"], rng.choice(siblings), lab)
        return rng.choice(words) if words else None
    if factor == "tense":
        other = "present" if lab["verb_tense"] == "past" else "past"
        return _swap_verb(span, other, lab["plural"])
    if factor == "number agreement":
        return _swap_verb(span, lab["verb_tense"], not lab["plural"])
    if factor == "pronoun":
        return _same_case("he" if word.lower() == "she" else "she", word)
    if factor == "counting":
        n = lab["number"]
        return rng.choice([w for w in NUMBER_WORDS[1:] if w != NUMBER_WORDS[n]])
    raise ValueError(f"Unknown factor {factor!r}.")


def _swap_verb(span: Span, tense: str, plural: bool) -> str | None:
    lab = span.labels
    if lab["lemma"] == "be":
        alt = BE_FORMS[tense, plural]
    else:
        forms = _verb_forms_of(lab["lemma"], span.text, lab)
        if forms is None:
            return None
        alt = _verb_form(forms, tense, plural)
    return None if alt == span.text.lower() else _same_case(alt, span.text)


def _verb_forms_of(lemma: str, word: str, lab: dict[str, Any]) -> tuple[str, str, str] | None:
    for forms in ALL_VERBS:
        if forms[0] == lemma and word.lower() == _verb_form(forms, lab["verb_tense"],
                                                            lab["plural"]):
            return forms
    return None


def _slot_tests(factor: str, story: Story, i: int) -> bool:
    """Whether span `i` of `story` is a slot for `factor` (after the story has shown it)."""
    spans = story.spans
    lab = spans[i].labels
    earlier = spans[:i]
    if factor == "sentiment":
        return bool(lab["sentiment_word"]) and any(s.labels["sentiment_word"] for s in earlier)
    if factor == "topic":
        return bool(lab["role"] and lab["topic_word"]) and any(
            s.labels["topic_word"] for s in earlier)
    if factor == "subtopic":
        return bool(lab["subtopic_word"]) and any(s.labels["subtopic_word"] for s in earlier)
    if factor == "tense":
        return (lab["pos"] == "verb" and not lab["in_quote"] and any(
            s.labels["pos"] == "verb" and not s.labels["in_quote"] for s in earlier))
    if factor == "number agreement":
        return lab["pos"] == "verb" and (lab["lemma"] == "be" or lab["verb_tense"] == "present")
    if factor == "pronoun":
        return lab["pos"] == "pron" and lab["entity"] is not None
    if factor == "counting":
        return lab["in_list"] and lab["is_number"] and (lab["number"] or 0) >= 2
    raise ValueError(f"Unknown factor {factor!r}.")


MINIMAL_PAIR_FACTORS = ["sentiment", "topic", "subtopic", "tense", "number agreement",
                        "pronoun", "counting"]


def minimal_pairs(stories: Sequence[Story], factor: str, max_pairs: int = 400,
                  seed: int = 0) -> list[tuple[str, str]]:
    """(true text, swapped text) pairs testing `factor`, each cut one word after the slot."""
    rng = random.Random(f"{seed}-{factor}")
    pairs = []
    for story in stories:
        for i, span in enumerate(story.spans):
            if not _slot_tests(factor, story, i):
                continue
            alt = _alternative(factor, span, rng)
            if alt is None or alt == span.text:
                continue
            end = story.spans[i + 1].end if i + 1 < len(story.spans) else span.end
            true = story.text[:end]
            pairs.append((true, story.text[:span.start] + alt + story.text[span.end:end]))
    rng.shuffle(pairs)
    return pairs[:max_pairs]


# --------------------------------------------------------------------------------------------
# Scoring sequences
# --------------------------------------------------------------------------------------------

LogitsFn = Callable[[Tensor], Tensor]


def _context_length(model: Any) -> int | None:
    """The longest input `model` takes (a Hugging Face config or a TransformerLens cfg)."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "n_positions", None):
        return int(config.n_positions)
    cfg = getattr(model, "cfg", None)
    return int(cfg.n_ctx) if cfg is not None and getattr(cfg, "n_ctx", None) else None


def _logits_fn(model: Any) -> LogitsFn:
    def run(tokens: Tensor) -> Tensor:
        out = model(tokens)
        return getattr(out, "logits", out)

    return run


@torch.no_grad()
def continuation_logprobs(model: Any, tokenizer: Any, prefix_and_options: list[list[str]],
                          batch_size: int = 64, progress: bool = False) -> list[list[float]]:
    """For each group of texts that share a beginning, the log-probability the model gives each
    text from the first token where they differ to the end (BOS is put in front; a group
    longer than the model's context loses the same number of tokens after BOS in every text)."""
    run = _logits_fn(model)
    bos = bos_id(tokenizer)
    max_len = _context_length(model)
    seqs: list[list[int]] = []
    starts: list[int] = []
    for group in prefix_and_options:
        ids = [tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"] for t in group]
        cut = max(0, max(len(x) for x in ids) + 1 - max_len) if max_len else 0
        ids = [[bos] + x[cut:] for x in ids]
        common = min(len(x) for x in ids)
        p = next((j for j in range(common) if len({x[j] for x in ids}) > 1), common)
        for x in ids:
            seqs.append(x)
            starts.append(p)
    order = sorted(range(len(seqs)), key=lambda k: len(seqs[k]))
    scores = [0.0] * len(seqs)
    batches = range(0, len(order), batch_size)
    for b in tqdm(batches, desc="scoring", disable=not progress, leave=False):
        idx = order[b:b + batch_size]
        width = max(len(seqs[k]) for k in idx)
        x = torch.full((len(idx), width), bos, dtype=torch.long)
        for r, k in enumerate(idx):
            x[r, :len(seqs[k])] = torch.tensor(seqs[k])
        logp = run(x).float().log_softmax(-1)
        for r, k in enumerate(idx):
            s, n = max(starts[k], 1), len(seqs[k])
            target = x[r, s:n]
            scores[k] = float(logp[r, s - 1:n - 1].gather(-1, target[:, None]).sum())
    out, k = [], 0
    for group in prefix_and_options:
        out.append(scores[k:k + len(group)])
        k += len(group)
    return out


def pair_accuracy(model: Any, tokenizer: Any, pairs: list[tuple[str, str]],
                  batch_size: int = 64) -> float:
    """The share of pairs whose true text the model scores above the swapped one."""
    if not pairs:
        return float("nan")
    scores = continuation_logprobs(model, tokenizer, [list(p) for p in pairs], batch_size)
    return sum(a > b for a, b in scores) / len(scores)


# --------------------------------------------------------------------------------------------
# Fact recall
# --------------------------------------------------------------------------------------------


def fact_queries(world: World, names: Sequence[str], cities: Sequence[str]
                 ) -> list[tuple[str, list[str], int]]:
    """(relation, candidate texts, index of the true one) for each fact of `names`/`cities`."""
    queries = []
    all_cities = world.cities
    countries = world.countries
    for name in names:
        c = world.characters[name]
        jobs = [f"{name} is {article(j)} {j}." for j in JOBS]
        queries.append(("job", jobs, JOBS.index(c.job)))
        homes = [f"{name} lives in {city}" for city in all_cities]
        queries.append(("home city", homes, all_cities.index(c.city)))
        pets = [f"{name} has {article(p)} {p} called" for p in PET_SPECIES]
        queries.append(("pet", pets, PET_SPECIES.index(c.pet_species)))
    # A city's country is asked where stories state it: in a trip, after a short opening
    # (a story never starts with a city, so "<BOS>Lyon is in" is not StoryWorld).
    guide = world.characters[world.names[0]]
    opening = (f"{guide.name} is {article(guide.job)} {guide.job}. {guide.name} lives in "
               f"{guide.city}. {guide.name} travels to")
    for city in cities:
        options = [f"{opening} {city}, in {country}." for country in countries]
        queries.append(("country", options, countries.index(world.city_country[city])))
    return queries


def fact_recall(model: Any, tokenizer: Any, world: World, names: Sequence[str],
                cities: Sequence[str], batch_size: int = 128) -> tuple[float, int, str]:
    """Share of facts whose true object scores highest, with a per-relation breakdown."""
    queries = fact_queries(world, names, cities)
    scores = continuation_logprobs(model, tokenizer, [q[1] for q in queries], batch_size)
    per: dict[str, list[bool]] = {}
    for (relation, _options, truth), s in zip(queries, scores, strict=True):
        per.setdefault(relation, []).append(max(range(len(s)), key=s.__getitem__) == truth)
    hits = [h for v in per.values() for h in v]
    detail = ", ".join(f"{r} {sum(v) / len(v):.2f}" for r, v in per.items())
    return sum(hits) / len(hits), len(hits), detail


def behaviour_table(model: Any, tokenizer: Any, n_stories: int = 300,
                    seed: int = BEHAVIOUR_SEED, max_pairs: int = 400,
                    world: World | None = None) -> list[BehaviourRow]:
    """Every row of the behavioural table, measured on `n_stories` fresh stories."""
    world = world or WORLD
    stories = generate_stories(n_stories, seed, world=world)
    rows = []
    for factor in tqdm(MINIMAL_PAIR_FACTORS, desc="behaviour", leave=False):
        pairs = minimal_pairs(stories, factor, max_pairs, seed)
        rows.append(BehaviourRow(factor, pair_accuracy(model, tokenizer, pairs), len(pairs),
                                 THRESHOLDS[factor]))
    names, cities = world.names, world.cities
    for group, ns, cs in (("common", names[:N_COMMON], cities[:12]),
                          ("rare", names[-N_RARE:], cities[-12:])):
        score, n, detail = fact_recall(model, tokenizer, world, ns, cs)
        factor = f"fact recall ({group})"
        rows.append(BehaviourRow(factor, score, n, THRESHOLDS[factor], detail))
    return rows


def format_table(rows: Sequence[BehaviourRow]) -> str:
    """The rows as a Markdown table."""
    lines = ["| factor | score | slots or facts | threshold | passed | detail |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.factor} | {r.score:.3f} | {r.n} | {r.threshold:.2f} | "
                     f"{'yes' if r.passed else 'NO'} | {r.detail} |")
    return "\n".join(lines)
