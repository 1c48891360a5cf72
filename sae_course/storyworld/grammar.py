"""StoryWorld's grammar: how a story is written, word by word, with every word's labels.

A story's factors are drawn first (topic, subtopic, sentiment, tense, hero, friend), then its
sentences are written from a small set of templates that use them:
- the opening states two or three facts about the hero ("Mara is a tailor. Mara lives in Lyon.");
- the body is topical sentences (actions, descriptions, "there are five pans in the kitchen"),
  with dialogue, counting ("one, two, three"), lists, trips and more facts mixed in;
- sentiment words of the story's polarity appear throughout (adjectives before nouns, adverbs,
  feelings, interjections), so tracking the story's sentiment pays off at many slots;
- the narration keeps the story's tense (speech inside quotes is in the present tense), and
  verbs agree in number with their subjects.

Every word is a `Span` with its labels (`DEFAULT_LABELS` lists them); the story-level factors
are on `Story.factors` and on every span.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sae_course.storyworld.vocabulary import (
    INTERJECTIONS,
    NUMBER_WORDS,
    SENTIMENT_ADJS,
    SENTIMENT_ADVERBS,
    SENTIMENT_BIAS,
    SENTIMENT_VERBS,
    SENTIMENTS,
    SUBTOPICS_OF,
    TENSES,
    TOPIC_DATA,
    TOPICS,
    Noun,
    Verb,
    verbs,
)
from sae_course.storyworld.world import WORLD, Character, World

DEFAULT_LABELS: dict[str, Any] = dict(
    pos="other", lemma=None, role=None, topic_word=None, subtopic_word=None,
    sentiment_word=None, plural=None, verb_tense=None, is_entity=False, entity=None,
    entity_type=None, is_number=False, number=None, in_quote=False, quote_mark=False,
    in_list=False, in_fact=False, sentence=0,
)
"""Word-level labels and their value on a word where they do not apply.

`role` says which slot of the vocabulary a topical word fills: "agent", "place", "topic_adj"
(topic level) or "noun", "mass", "verb", "adj" (subtopic level)."""

POS_TAGS = ["det", "noun", "verb", "adj", "adv", "name", "num", "pron", "prep", "conj",
            "punct", "other"]


@dataclass
class Span:
    """One word or punctuation mark: its characters `text[start:end]` and its labels."""

    start: int
    end: int
    text: str
    labels: dict[str, Any]


@dataclass
class Story:
    """A generated story: its text, its story-level factors and its labelled word spans."""

    text: str
    factors: dict[str, Any]
    spans: list[Span] = field(default_factory=list)

    def __str__(self) -> str:
        return self.text


_ATTACH = {".", ",", "!", "?", ":"}


class _Builder:
    """Appends words with labels, handling spaces, capitals, quotes and lists."""

    def __init__(self, story_labels: dict[str, Any]):
        self.parts: list[str] = []
        self.spans: list[Span] = []
        self.pos = 0
        self.base = {**DEFAULT_LABELS, **story_labels}
        self.ctx: dict[str, Any] = {}
        self.sentence = 0
        self.cap_next = True
        self.glue_next = True  # no space before the next word

    def add(self, text: str, pos: str = "other", **labels: Any) -> None:
        if self.cap_next:
            text = text[0].upper() + text[1:]
            self.cap_next = False
        if not self.glue_next and text not in _ATTACH and not labels.get("closing"):
            self.parts.append(" ")
            self.pos += 1
        labels.pop("closing", None)
        self.glue_next = False
        start = self.pos
        self.parts.append(text)
        self.pos += len(text)
        lab = {**self.base, **self.ctx, "pos": pos, "sentence": self.sentence, **labels}
        self.spans.append(Span(start, self.pos, text, lab))

    def end_sentence(self, mark: str | None = ".") -> None:
        if mark is not None:
            self.add(mark, "punct")
        self.sentence += 1
        self.cap_next = True

    def open_quote(self) -> None:
        self.ctx["in_quote"] = True
        self.add('"', "punct", quote_mark=True)
        self.glue_next = True
        self.cap_next = True

    def close_quote(self) -> None:
        self.add('"', "punct", quote_mark=True, closing=True)
        self.ctx.pop("in_quote")

    def text(self) -> str:
        return "".join(self.parts)


def article(word: str) -> str:
    """'a' or 'an' before `word`."""
    return "an" if word[0] in "aeiou" else "a"


BE_FORMS = {("present", False): "is", ("present", True): "are",
            ("past", False): "was", ("past", True): "were"}
LIST_VERBS = verbs("buy:bought need:needed bring:brought pack")
SAID = ("say", "says", "said")
SHOUTED = ("shout", "shouts", "shouted")
LIVE = ("live", "lives", "lived")
HAVE = ("have", "has", "had")
TRAVEL = ("travel", "travels", "travelled")
FEEL = ("feel", "feels", "felt")
GO = ("go", "goes", "went")
COUNT = ("count", "counts", "counted")
FIXED_VERBS = [SAID, SHOUTED, LIVE, HAVE, TRAVEL, FEEL, GO, COUNT]
"""The verbs of the grammar's fixed sentences (speech, facts, trips, feelings, counting)."""
ALL_VERBS: list[Verb] = (
    [v for t in TOPIC_DATA.values() for sub in t.subtopics.values() for v in sub.verbs]
    + [v for vs in SENTIMENT_VERBS.values() for v in vs] + LIST_VERBS + FIXED_VERBS
)
"""Every verb StoryWorld writes, as (base, third person singular, past)."""


class _Writer:
    """Writes the sentences of one story into a builder."""

    def __init__(self, rng: random.Random, world: World, b: _Builder, topic: str,
                 subtopic: str, sentiment: str, tense: str, hero: Character,
                 friend: Character):
        self.rng, self.world, self.b = rng, world, b
        self.t, self.topic = TOPIC_DATA[topic], topic
        self.s, self.subtopic = self.t.subtopics[subtopic], subtopic
        self.sentiment, self.tense = sentiment, tense
        self.hero, self.friend = hero, friend

    # -- words -------------------------------------------------------------------------------
    def verb(self, forms: Verb, plural: bool, tense: str | None = None, **labels: Any) -> None:
        tense = tense or self.tense
        word = forms[2] if tense == "past" else (forms[0] if plural else forms[1])
        self.b.add(word, "verb", lemma=forms[0], plural=plural, verb_tense=tense, **labels)

    def topic_verb(self, plural: bool) -> None:
        self.verb(self.rng.choice(self.s.verbs), plural, role="verb", topic_word=self.topic,
                  subtopic_word=self.subtopic)

    def be(self, plural: bool, tense: str | None = None) -> None:
        tense = tense or self.tense
        self.b.add(BE_FORMS[tense, plural], "verb", lemma="be", plural=plural, verb_tense=tense)

    def name(self, c: Character) -> None:
        self.b.add(c.name, "name", is_entity=True, entity=c.name, entity_type="character")

    def pronoun(self, c: Character) -> None:
        self.b.add(c.pronoun, "pron", plural=False, entity=c.name)

    def place_name(self, city: str) -> None:
        self.b.add(city, "name", is_entity=True, entity=city, entity_type="city")

    def country(self, city: str) -> None:
        c = self.world.city_country[city]
        self.b.add(c, "name", is_entity=True, entity=c, entity_type="country")

    def number(self, n: int, digits: bool = False) -> None:
        text = str(n) if digits or n >= len(NUMBER_WORDS) else NUMBER_WORDS[n]
        self.b.add(text, "num", is_number=True, number=n)

    def noun(self, forms: Noun, plural: bool) -> None:
        """A subtopic noun."""
        self.b.add(forms[1] if plural else forms[0], "noun", lemma=forms[0], plural=plural,
                   role="noun", topic_word=self.topic, subtopic_word=self.subtopic)

    def mass(self) -> None:
        word = self.rng.choice(self.s.mass)
        self.b.add(word, "noun", lemma=word, plural=False, role="mass", topic_word=self.topic,
                   subtopic_word=self.subtopic)

    def agent(self, plural: bool) -> None:
        forms = self.rng.choice(self.t.agents)
        self.b.add(forms[1] if plural else forms[0], "noun", lemma=forms[0], plural=plural,
                   role="agent", topic_word=self.topic)

    def place(self) -> None:
        word = self.rng.choice(self.t.places)
        self.b.add(word, "noun", lemma=word, plural=False, role="place", topic_word=self.topic)

    def topical_adj(self) -> str:
        """A topic-level or subtopic adjective (not yet added); returns it."""
        if self.rng.random() < 0.5:
            return self.rng.choice(self.t.adjs)
        return self.rng.choice(self.s.adjs)

    def add_topical_adj(self, word: str) -> None:
        if word in self.s.adjs:
            self.b.add(word, "adj", lemma=word, role="adj", topic_word=self.topic,
                       subtopic_word=self.subtopic)
        else:
            self.b.add(word, "adj", lemma=word, role="topic_adj", topic_word=self.topic)

    def sent_adj_word(self) -> str:
        return self.rng.choice(SENTIMENT_ADJS[self.sentiment])

    def sent_adj(self, word: str | None = None) -> None:
        word = word or self.sent_adj_word()
        self.b.add(word, "adj", lemma=word, sentiment_word=self.sentiment)

    def adverb(self) -> None:
        word = self.rng.choice(SENTIMENT_ADVERBS[self.sentiment])
        self.b.add(word, "adv", lemma=word, sentiment_word=self.sentiment)

    def determiner_and_noun(self, noun: Noun, plural: bool, definite: bool = True) -> None:
        """'the soup', 'the lovely soups', 'a steaming pot', 'an awful cake'."""
        adj = None
        r = self.rng.random()
        if r < 0.4:
            adj = ("sent", self.sent_adj_word())
        elif r < 0.5:
            adj = ("topic", self.topical_adj())
        if definite or plural:
            self.b.add("the", "det")
        else:
            self.b.add(article(adj[1] if adj else noun[0]), "det")
        if adj is not None:
            if adj[0] == "sent":
                self.sent_adj(adj[1])
            else:
                self.add_topical_adj(adj[1])
        self.noun(noun, plural)

    def subject(self) -> bool:
        """Writes a subject; returns whether it is plural."""
        r = self.rng.random()
        if r < 0.3:
            self.name(self.hero)
            return False
        if r < 0.5:
            self.pronoun(self.hero)
            return False
        if r < 0.65:
            self.name(self.hero)
            self.b.add("and", "conj")
            self.name(self.friend)
            return True
        plural = r >= 0.85
        self.b.add("the", "det")
        self.agent(plural)
        return plural

    def obj(self) -> None:
        r = self.rng.random()
        if r < 0.15:
            self.b.add(self.rng.choice(["some", "the"]), "det")
            self.mass()
            return
        noun = self.rng.choice(self.s.nouns)
        if r < 0.5:
            self.determiner_and_noun(noun, False)
        elif r < 0.65:
            self.determiner_and_noun(noun, False, definite=False)
        elif r < 0.85:
            self.determiner_and_noun(noun, True)
        else:
            self.number(self.rng.randint(2, 10))
            self.noun(noun, True)

    # -- sentences ---------------------------------------------------------------------------
    def s_action(self) -> None:
        plural = self.subject()
        self.topic_verb(plural)
        self.obj()
        r = self.rng.random()
        if r < 0.25:
            self.b.add("in", "prep")
            self.b.add("the", "det")
            self.place()
        elif r < 0.4:
            self.b.add("with", "prep")
            self.determiner_and_noun(self.rng.choice(self.s.nouns), self.rng.random() < 0.5)
        if self.rng.random() < 0.4:
            self.adverb()
        self.b.end_sentence()

    def s_describe(self) -> None:
        plural = self.rng.random() < 0.5
        self.b.add("the", "det")
        self.noun(self.rng.choice(self.s.nouns), plural)
        self.be(plural)
        if self.rng.random() < 0.6:
            self.sent_adj()
        else:
            self.add_topical_adj(self.topical_adj())
        self.b.end_sentence()

    def s_go(self) -> None:
        plural = self.subject()
        self.verb(GO, plural)
        self.b.add("to", "prep")
        self.b.add("the", "det")
        self.place()
        if self.rng.random() < 0.4:
            self.adverb()
        self.b.end_sentence()

    def s_there(self) -> None:
        n = self.rng.choice([1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20])
        plural = n > 1
        self.b.add("there", "other")
        self.be(plural)
        noun = self.rng.choice(self.s.nouns)
        if n == 1:
            self.b.add(article(noun[0]), "det")
        else:
            self.number(n, digits=self.rng.random() < 0.3)
        self.noun(noun, plural)
        self.b.add("in", "prep")
        self.b.add("the", "det")
        self.place()
        self.b.end_sentence()

    def s_sentiment(self) -> None:
        r = self.rng.random()
        if r < 0.3:
            self.b.add("it", "pron", plural=False)
            self.be(False)
            word = self.sent_adj_word()
            self.b.add(article(word), "det")
            self.sent_adj(word)
            self.b.add(self.rng.choice(["day", "morning", "evening"]), "noun", plural=False)
        elif r < 0.55:
            self.pronoun(self.hero)
            self.verb(FEEL, False)
            self.sent_adj()
        elif r < 0.8:
            self.name(self.hero)
            self.verb(self.rng.choice(SENTIMENT_VERBS[self.sentiment]), False,
                      sentiment_word=self.sentiment)
            self.b.add("the", "det")
            self.noun(self.rng.choice(self.s.nouns), self.rng.random() < 0.5)
        else:
            self.b.add("everything", "pron", plural=False)
            self.be(False)
            self.sent_adj()
        self.b.end_sentence()

    def quote_content(self) -> None:
        r = self.rng.random()
        if r < 0.3:
            inter = self.rng.choice(INTERJECTIONS[self.sentiment])
            for w in inter.split():
                self.b.add(w, "other", sentiment_word=self.sentiment if w != "oh" else None)
            self.b.add(",", "punct")
        if r < 0.5:
            plural = self.rng.random() < 0.5
            self.b.add("the", "det")
            self.noun(self.rng.choice(self.s.nouns), plural)
            self.be(plural, tense="present")
            if self.rng.random() < 0.6:
                self.sent_adj()
            else:
                self.add_topical_adj(self.topical_adj())
        elif r < 0.75:
            self.b.add("we", "pron", plural=True)
            self.verb(self.rng.choice(SENTIMENT_VERBS[self.sentiment]), True, tense="present",
                      sentiment_word=self.sentiment)
            self.b.add("the", "det")
            self.noun(self.rng.choice(self.s.nouns), True)
        else:
            self.b.add("we", "pron", plural=True)
            self.verb(("need", "need", "needed"), True, tense="present")
            self.number(self.rng.randint(2, 10))
            self.noun(self.rng.choice(self.s.nouns), True)

    def s_dialogue(self) -> None:
        r = self.rng.random()
        if r < 0.5:
            self.b.open_quote()
            self.quote_content()
            self.b.add(",", "punct")
            self.b.close_quote()
            self.verb(SAID, False)
            self.name(self.hero)
        elif r < 0.8:
            self.name(self.hero)
            self.verb(SAID, False)
            self.b.add(",", "punct")
            self.b.open_quote()
            self.quote_content()
            self.b.add(".", "punct")
            self.b.close_quote()
            self.b.end_sentence(None)
            return
        else:
            self.b.open_quote()
            self.quote_content()
            self.b.add("!", "punct")
            self.b.close_quote()
            self.verb(SHOUTED, False)
            self.b.add("the", "det")
            self.agent(False)
        self.b.end_sentence()

    def s_count(self) -> None:
        n = self.rng.randint(2, 6)
        self.pronoun(self.hero)
        self.verb(COUNT, False)
        self.number(n)
        self.noun(self.rng.choice(self.s.nouns), True)
        self.b.add(":", "punct")
        self.b.ctx["in_list"] = True
        for i in range(1, n + 1):
            self.number(i)
            if i < n:
                self.b.add(",", "punct")
        self.b.ctx.pop("in_list")
        self.b.end_sentence()

    def s_list(self) -> None:
        self.pronoun(self.hero)
        self.verb(self.rng.choice(LIST_VERBS), False)
        k = self.rng.randint(3, 4)
        pool = [(n, True) for n in self.s.nouns] + [(None, False)] * len(self.s.mass)
        items = self.rng.sample(pool, k)
        self.b.ctx["in_list"] = True
        masses = self.rng.sample(self.s.mass, len(self.s.mass))
        for i, (forms, countable) in enumerate(items):
            if countable:
                self.noun(forms, True)
            else:
                word = masses.pop()
                self.b.add(word, "noun", lemma=word, plural=False, role="mass",
                           topic_word=self.topic, subtopic_word=self.subtopic)
            if i < k - 2:
                self.b.add(",", "punct")
            elif i == k - 2:
                self.b.add("and", "conj")
        self.b.ctx.pop("in_list")
        self.b.end_sentence()

    def s_job(self, c: Character) -> None:
        self.b.ctx["in_fact"] = True
        self.name(c)
        self.be(False)
        self.b.add(article(c.job), "det")
        self.b.add(c.job, "noun", lemma=c.job, plural=False, role="job")
        if self.rng.random() < 0.3:
            self.b.add("from", "prep")
            self.place_name(c.city)
        self.b.ctx.pop("in_fact")
        self.b.end_sentence()

    def s_home(self, c: Character) -> None:
        self.b.ctx["in_fact"] = True
        self.name(c)
        self.verb(LIVE, False)
        self.b.add("in", "prep")
        self.place_name(c.city)
        if self.rng.random() < 0.4:
            self.b.add(",", "punct")
            self.b.add("in", "prep")
            self.country(c.city)
        self.b.ctx.pop("in_fact")
        self.b.end_sentence()

    def s_pet(self, c: Character) -> None:
        self.b.ctx["in_fact"] = True
        self.name(c)
        self.verb(HAVE, False)
        self.b.add(article(c.pet_species), "det")
        self.b.add(c.pet_species, "noun", lemma=c.pet_species, plural=False, role="pet_species")
        self.b.add("called", "other")
        self.b.add(c.pet_name, "name", is_entity=True, entity=c.pet_name, entity_type="pet")
        self.b.ctx.pop("in_fact")
        self.b.end_sentence()

    def s_city(self, city: str) -> None:
        """A timeless fact: "Lyon is in France." (present) or "Lyon, a city in France, was
        lovely." (past), so the narration keeps the story's tense."""
        self.b.ctx["in_fact"] = True
        self.place_name(city)
        if self.tense == "present":
            self.be(False)
            self.b.add("in", "prep")
            self.country(city)
            self.b.ctx.pop("in_fact")
        else:
            self.b.add(",", "punct")
            self.b.add("a", "det")
            self.b.add("city", "noun", plural=False)
            self.b.add("in", "prep")
            self.country(city)
            self.b.ctx.pop("in_fact")
            self.b.add(",", "punct")
            self.be(False)
            self.sent_adj()
        self.b.end_sentence()

    def s_travel(self) -> None:
        """A trip to a city drawn by Zipf frequency, stating its country."""
        city = self.world.draw_city(self.rng)
        self.b.ctx["in_fact"] = True
        plural = self.rng.random() < 0.3
        self.name(self.hero)
        if plural:
            self.b.add("and", "conj")
            self.name(self.friend)
        self.verb(TRAVEL, plural)
        self.b.add("to", "prep")
        self.place_name(city)
        self.b.add(",", "punct")
        self.b.add("in", "prep")
        self.country(city)
        self.b.ctx.pop("in_fact")
        self.b.end_sentence()


def _rng(rng_or_seed: random.Random | int | None) -> random.Random:
    if isinstance(rng_or_seed, random.Random):
        return rng_or_seed
    if rng_or_seed is None or isinstance(rng_or_seed, int):
        return random.Random(rng_or_seed)
    raise TypeError(
        f"generate_story needs a random.Random or an int seed, got {type(rng_or_seed).__name__}."
    )


def _pick(name: str, value: str | None, allowed: Sequence[str], rng: random.Random) -> str:
    if value is None:
        return rng.choice(list(allowed))
    if value not in allowed:
        raise ValueError(f"Unknown {name} {value!r}: choose one of {', '.join(allowed)}.")
    return value


def generate_story(
    rng_or_seed: random.Random | int | None = None,
    *,
    world: World | None = None,
    topic: str | None = None,
    subtopic: str | None = None,
    sentiment: str | None = None,
    tense: str | None = None,
    hero: str | None = None,
) -> Story:
    """One story with its factors and labelled spans.

    `rng_or_seed`: a `random.Random` (advanced in place, so successive calls give different
    stories) or an int seed (the same seed always gives the same story). The factors that are
    not given are drawn: topic uniformly, subtopic uniformly within the topic, sentiment with
    P(positive) = `SENTIMENT_BIAS[topic]`, tense uniformly, hero and friend by Zipf frequency.
    """
    rng = _rng(rng_or_seed)
    world = world or WORLD
    topic = _pick("topic", topic, TOPICS, rng)
    if subtopic is None:
        subtopic = rng.choice(SUBTOPICS_OF[topic])
    elif subtopic not in SUBTOPICS_OF[topic]:
        raise ValueError(f"Unknown subtopic {subtopic!r} of {topic}: choose one of "
                         f"{', '.join(SUBTOPICS_OF[topic])}.")
    if sentiment is None:
        sentiment = "positive" if rng.random() < SENTIMENT_BIAS[topic] else "negative"
    sentiment = _pick("sentiment", sentiment, SENTIMENTS, rng)
    tense = _pick("tense", tense, TENSES, rng)
    if hero is None:
        hero_c = world.draw_character(rng)
    else:
        hero_c = world.characters[_pick("hero", hero, world.names, rng)]
    friend_c = world.draw_character(rng, exclude=hero_c.name)
    story_labels = {"topic": topic, "subtopic": subtopic, "sentiment": sentiment,
                    "tense": tense}
    b = _Builder(story_labels)
    w = _Writer(rng, world, b, topic, subtopic, sentiment, tense, hero_c, friend_c)

    # Opening: two or three facts about the hero, in a random order.
    opening = [lambda: w.s_job(hero_c), lambda: w.s_home(hero_c), lambda: w.s_pet(hero_c)]
    rng.shuffle(opening)
    opening = opening[:rng.choice([2, 2, 3])]
    if rng.random() < 0.3:
        opening.append(lambda: w.s_city(hero_c.city))
    # Body: topic sentences with dialogue, counting, lists and more facts mixed in.
    body = [w.s_action, w.s_action, w.s_describe]
    body += [rng.choice([w.s_action, w.s_go, w.s_there, w.s_describe]) for _ in range(
        rng.randint(1, 3))]
    if rng.random() < 0.5:
        body.append(w.s_dialogue)
    if rng.random() < 0.3:
        body.append(w.s_count)
    if rng.random() < 0.3:
        body.append(w.s_list)
    if rng.random() < 0.3:
        body.append(w.s_travel)
    if rng.random() < 0.2:
        body.append(lambda: w.s_job(friend_c))
    if rng.random() < 0.6:
        body.append(w.s_sentiment)
    first, rest = body[:2], body[2:]
    rng.shuffle(rest)
    for sentence in opening + first + rest:
        sentence()
    w.s_sentiment()

    factors = {
        **story_labels,
        "hero": hero_c.name,
        "friend": friend_c.name if any(
            s.labels["entity"] == friend_c.name for s in b.spans) else None,
        "city": hero_c.city,
        "country": world.city_country[hero_c.city],
        "has_dialogue": any(s.labels["in_quote"] for s in b.spans),
        "has_list": any(s.labels["in_list"] for s in b.spans),
        "n_sentences": b.sentence,
        "world_seed": world.seed,
    }
    return Story(text=b.text(), factors=factors, spans=b.spans)


def generate_stories(n: int, seed: int, **kwargs: Any) -> list[Story]:
    """`n` labelled stories from one seeded generator (same seed, same stories)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    rng = random.Random(seed)
    return [generate_story(rng, **kwargs) for _ in range(n)]


def sample_texts(n: int, seed: int, **kwargs: Any) -> list[str]:
    """The texts of `n` stories (see `generate_stories`); keyword arguments fix factors."""
    return [s.text for s in generate_stories(n, seed, **kwargs)]
