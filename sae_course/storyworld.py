"""StoryWorld: a small synthetic English-like language whose generating factors are known.

Every story is built word by word from a few latent factors, and every word (segment) of the
text carries its ground-truth labels, so an SAE trained on a model of this language can be
checked against the truth and a steering intervention can be scored by what it really changed.

Story-level factors (on `Story.factors` and on every segment):
- `topic`: one of `TOPICS` (cooking, sailing, space, ...); each topic has its own vocabulary.
- `sentiment`: "positive" or "negative"; the story uses sentiment words of that polarity.
- `tense`: "present" or "past"; the narration keeps it for the whole story
  (speech inside quotes is always in the present tense, as in ordinary English).
- `hero` (and sometimes `friend`, `city`, `country`): the characters and places of the world.

Word-level labels (on each `Span.labels`, see `DEFAULT_LABELS`):
- `pos`: det, noun, verb, adj, name, num, pron, prep, conj, punct or other.
- `topic_word`: the topic whose vocabulary the word belongs to, else None.
- `sentiment_word`: "positive"/"negative" for sentiment words, else None.
- `plural`: for nouns and pronouns their number, for verbs (and copulas) their subject's
  number, else None.
- `verb_tense`: "present"/"past" on verbs and copulas, else None.
- `is_entity`, `entity`, `entity_type` (character, pet, city, country).
- `is_number`, `number`: number words and digits with their value.
- `in_quote` (words and marks of direct speech), `quote_mark` (the quote characters).
- `in_list` (items, commas and "and" of an enumeration or a count "one, two, three").
- `in_fact` (a sentence that states a fixed world fact: a job, a home, a pet, a country).

The world's facts are fixed by a seed (`World.from_seed`; `WORLD` is seed 0): a character always
has the same job, pet and home city, a city is always in the same country, and the stories
state those facts ("Lyon is in France", "Mara is a tailor").

Use `generate_story` for one labelled story, `sample_texts` for plain text, and
`labelled_tokens` to align the labels with a tokenizer's tokens.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tokenizers
import torch

MODEL_DIR = Path(__file__).parent / "assets" / "storyworld_model"
"""The folder of the shipped offline model (config, safetensors weights, tokenizer, card)."""

BOS_TOKEN = "<|endoftext|>"
"""Beginning/end of text, as in GPT-2: it separates stories and starts every context."""

SENTIMENTS = ["positive", "negative"]
TENSES = ["present", "past"]
ENTITY_TYPES = ["character", "pet", "city", "country"]
POS_TAGS = ["det", "noun", "verb", "adj", "name", "num", "pron", "prep", "conj", "punct", "other"]

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------


def _plural(noun: str) -> str:
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _third(verb: str) -> str:
    if verb.endswith(("s", "sh", "ch", "x", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _past(verb: str) -> str:
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    return verb + "ed"


def _nouns(spec: str) -> list[tuple[str, str]]:
    """'boat knife:knives sheep:sheep' -> [(singular, plural), ...]."""
    out = []
    for item in spec.split():
        sg, _, pl = item.partition(":")
        out.append((sg, pl or _plural(sg)))
    return out


def _verbs(spec: str) -> list[tuple[str, str, str]]:
    """'cook stir:stirred fly:flew' -> [(base, third person singular, past), ...]."""
    out = []
    for item in spec.split():
        base, _, past = item.partition(":")
        out.append((base, _third(base), past or _past(base)))
    return out


_TOPIC_SPECS: dict[str, dict[str, str]] = {
    "cooking": dict(
        agents="cook chef",
        nouns="soup pan oven onion carrot egg apple knife:knives spoon cake pie pot recipe stove "
        "plate lemon bowl sausage potato:potatoes cookie",
        mass="flour salt butter sugar cream rice honey",
        verbs="cook bake stir:stirred chop:chopped taste boil slice fry mix serve peel roast",
        places="kitchen bakery market",
        adjs="hot fresh sweet crispy tasty spicy",
    ),
    "sailing": dict(
        agents="sailor captain",
        nouns="boat sail wave rope anchor mast deck island ship oar compass gull tide buoy cabin "
        "lighthouse",
        mass="seaweed driftwood",
        verbs="sail row steer tie:tied hoist coil lower drift moor splash navigate",
        places="harbour bay coast",
        adjs="windy stormy salty wet choppy foggy",
    ),
    "space": dict(
        agents="astronaut engineer",
        nouns="rocket star planet moon comet telescope engine helmet satellite galaxy:galaxies "
        "asteroid capsule crater spacesuit meteor antenna robot orbit",
        mass="fuel oxygen stardust",
        verbs="launch land scan:scanned fly:flew dock repair measure observe float explore",
        places="station observatory launchpad",
        adjs="distant cosmic lunar orbital weightless",
    ),
    "farming": dict(
        agents="farmer shepherd",
        nouns="cow pig hen horse tractor field barn seed fence plough bucket crop lamb "
        "goose:geese sheep:sheep pumpkin haystack scarecrow",
        mass="wheat corn hay straw grain",
        verbs="plant feed:fed harvest dig:dug herd gather sow shear",
        places="farm meadow orchard",
        adjs="muddy rural ripe dusty golden",
    ),
    "music": dict(
        agents="musician singer",
        nouns="song guitar piano drum violin note concert band choir melody flute trumpet tune "
        "chord album microphone harp",
        mass="jazz rhythm harmony",
        verbs="play sing:sang hum:hummed clap:clapped perform record compose strum:strummed "
        "rehearse",
        places="stage theatre opera",
        adjs="loud musical acoustic melodic",
    ),
    "medicine": dict(
        agents="doctor nurse",
        nouns="patient pill fever bandage wound cough needle heart bone syringe vaccine "
        "stretcher thermometer tablet plaster ambulance injury pulse",
        mass="medicine blood ointment",
        verbs="heal treat examine cure inject prescribe diagnose soothe",
        places="hospital clinic pharmacy",
        adjs="sick healthy medical feverish sore",
    ),
    "football": dict(
        agents="player coach",
        nouns="ball goal match team pitch referee striker boot whistle fan shirt corner penalty "
        "trophy league goalkeeper tackle",
        mass="turf teamwork",
        verbs="kick score pass shoot:shot defend cheer dribble train",
        places="stadium arena clubhouse",
        adjs="athletic sporty defensive competitive",
    ),
    "painting": dict(
        agents="painter artist",
        nouns="brush canvas colour portrait easel sketch frame palette landscape pencil mural "
        "stroke crayon statue poster picture masterpiece",
        mass="paint ink charcoal clay",
        verbs="paint draw:drew sketch blend hang:hung shade carve varnish",
        places="gallery studio museum",
        adjs="colourful artistic pale vivid abstract",
    ),
}


@dataclass(frozen=True)
class Topic:
    """One topic's vocabulary."""

    name: str
    agents: list[tuple[str, str]]
    nouns: list[tuple[str, str]]
    mass: list[str]
    verbs: list[tuple[str, str, str]]
    places: list[str]
    adjs: list[str]

    def words(self) -> set[str]:
        """Every word form of this topic (lower case)."""
        out = set(self.mass) | set(self.places) | set(self.adjs)
        for pair in self.agents + self.nouns:
            out.update(pair)
        for triple in self.verbs:
            out.update(triple)
        return out


TOPIC_DATA: dict[str, Topic] = {
    name: Topic(
        name=name,
        agents=_nouns(spec["agents"]),
        nouns=_nouns(spec["nouns"]),
        mass=spec["mass"].split(),
        verbs=_verbs(spec["verbs"]),
        places=spec["places"].split(),
        adjs=spec["adjs"].split(),
    )
    for name, spec in _TOPIC_SPECS.items()
}
TOPICS: list[str] = list(TOPIC_DATA)
"""The topic names, in a fixed order (the index is the topic's class id)."""

POSITIVE_ADJS = ("wonderful lovely happy perfect great proud calm cheerful delighted glad "
                 "excellent joyful").split()
NEGATIVE_ADJS = ("terrible awful sad gloomy angry worried miserable dreadful upset horrible "
                 "grumpy lonely").split()
SENTIMENT_VERBS = {"positive": _verbs("love enjoy"), "negative": _verbs("hate dread")}
INTERJECTIONS = {"positive": ["hooray", "wow", "yes"], "negative": ["oh no", "alas", "ugh"]}

JOBS = "teacher tailor builder clerk driver miner writer judge banker lawyer plumber librarian"
JOBS = JOBS.split()
PET_SPECIES = "cat dog parrot rabbit hamster turtle canary ferret".split()
PET_NAMES = ("Pip Biscuit Luna Max Coco Pepper Milo Daisy Bruno Olive Ziggy Nutmeg Waffles "
             "Pebble Socks Mango Rusty Bean Toffee Clover Gizmo Peanut Juniper Sprout").split()
CHARACTER_PRONOUNS = {
    "Mara": "she", "Tom": "he", "Lena": "she", "Omar": "he", "Ivy": "she", "Noah": "he",
    "Sara": "she", "Leo": "he", "Nina": "she", "Hugo": "he", "Ada": "she", "Finn": "he",
    "Rosa": "she", "Eli": "he", "Maya": "she", "Ben": "he", "Zoe": "she", "Ravi": "he",
    "Ana": "she", "Jack": "he", "Mia": "she", "Theo": "he", "Lucy": "she", "Sam": "he",
}
CITY_COUNTRY = {
    "Lyon": "France", "Paris": "France", "Porto": "Portugal", "Lisbon": "Portugal",
    "Milan": "Italy", "Naples": "Italy", "Oslo": "Norway", "Bergen": "Norway",
    "Kyoto": "Japan", "Osaka": "Japan", "Cairo": "Egypt", "Alexandria": "Egypt",
    "Lima": "Peru", "Cusco": "Peru", "Dublin": "Ireland", "Cork": "Ireland",
    "Hamburg": "Germany", "Munich": "Germany",
}
NUMBER_WORDS = "zero one two three four five six seven eight nine ten".split()

_FUNCTION_WORDS = set(
    "a an the some it is are was were in to with and there we they she he her his their "
    "has have had go goes went said says shouted shouts feel feels felt need needs needed "
    "buy buys bought bring brings brought count counts counted lives lived live a city day "
    "evening morning everything called from this that very of named travel travels "
    "travelled".split()
)

TOPIC_OF_WORD: dict[str, str] = {w: t.name for t in TOPIC_DATA.values() for w in t.words()}
"""Every topic word form (lower case) -> its topic."""
SENTIMENT_OF_WORD: dict[str, str] = {
    **{w: "positive" for w in POSITIVE_ADJS},
    **{w: "negative" for w in NEGATIVE_ADJS},
    **{w: s for s, vs in SENTIMENT_VERBS.items() for v in vs for w in v},
    **{w: s for s, ws in INTERJECTIONS.items() for x in ws for w in x.split() if w != "oh"},
}


def _check_vocabulary() -> None:
    seen: dict[str, str] = {}
    for t in TOPIC_DATA.values():
        for w in t.words():
            if w in seen and seen[w] != t.name:
                raise AssertionError(f"{w!r} is in both {seen[w]} and {t.name}")
            seen[w] = t.name
    others = set(SENTIMENT_OF_WORD) | _FUNCTION_WORDS | set(JOBS) | set(PET_SPECIES)
    clash = others & set(seen)
    if clash:
        raise AssertionError(f"topic words also used elsewhere: {sorted(clash)}")


_check_vocabulary()

# --------------------------------------------------------------------------------------------
# The world and its fixed facts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Character:
    """A recurring character and the facts that never change about them."""

    name: str
    pronoun: str  # "she" or "he"
    job: str
    pet_species: str
    pet_name: str
    city: str


@dataclass(frozen=True)
class World:
    """The fixed facts of a StoryWorld: characters (job, pet, home) and cities (country)."""

    seed: int
    characters: dict[str, Character]
    city_country: dict[str, str]

    @classmethod
    def from_seed(cls, seed: int = 0) -> World:
        """A world whose character facts are drawn from `seed` (cities keep real countries)."""
        rng = random.Random(f"storyworld-{seed}")
        pets = PET_NAMES.copy()
        rng.shuffle(pets)
        cities = list(CITY_COUNTRY)
        chars = {}
        for i, (name, pronoun) in enumerate(CHARACTER_PRONOUNS.items()):
            chars[name] = Character(
                name=name, pronoun=pronoun, job=rng.choice(JOBS),
                pet_species=rng.choice(PET_SPECIES), pet_name=pets[i % len(pets)],
                city=rng.choice(cities),
            )
        return cls(seed=seed, characters=chars, city_country=dict(CITY_COUNTRY))

    def facts(self) -> list[tuple[str, str, str]]:
        """Every fixed fact as (subject, relation, object) triples."""
        out = [(city, "is_in", country) for city, country in self.city_country.items()]
        for c in self.characters.values():
            out += [(c.name, "job", c.job), (c.name, "lives_in", c.city),
                    (c.name, "pet_species", c.pet_species), (c.name, "pet_name", c.pet_name),
                    (c.name, "pronoun", c.pronoun)]
        return out


WORLD = World.from_seed(0)
"""The default world (seed 0): the one the shipped model was trained on."""

# --------------------------------------------------------------------------------------------
# Stories
# --------------------------------------------------------------------------------------------

DEFAULT_LABELS: dict[str, Any] = dict(
    pos="other", lemma=None, topic_word=None, sentiment_word=None, plural=None, verb_tense=None,
    is_entity=False, entity=None, entity_type=None, is_number=False, number=None,
    in_quote=False, quote_mark=False, in_list=False, in_fact=False, sentence=0,
)
"""Word-level labels and their value on a word where they do not apply."""


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


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class _Writer:
    """Writes the sentences of one story into a builder."""

    def __init__(self, rng: random.Random, world: World, b: _Builder, topic: str,
                 sentiment: str, tense: str, hero: Character, friend: Character):
        self.rng, self.world, self.b = rng, world, b
        self.t, self.topic, self.sentiment, self.tense = TOPIC_DATA[topic], topic, sentiment, tense
        self.hero, self.friend = hero, friend

    # -- words -------------------------------------------------------------------------------
    def verb(self, forms: tuple[str, str, str], plural: bool, tense: str | None = None,
             **labels: Any) -> None:
        tense = tense or self.tense
        word = forms[2] if tense == "past" else (forms[0] if plural else forms[1])
        self.b.add(word, "verb", lemma=forms[0], plural=plural, verb_tense=tense, **labels)

    def be(self, plural: bool, tense: str | None = None, **labels: Any) -> None:
        tense = tense or self.tense
        forms = {("present", False): "is", ("present", True): "are",
                 ("past", False): "was", ("past", True): "were"}
        self.b.add(forms[tense, plural], "verb", lemma="be", plural=plural, verb_tense=tense,
                   **labels)

    def name(self, c: Character) -> None:
        self.b.add(c.name, "name", is_entity=True, entity=c.name, entity_type="character")

    def place_name(self, city: str) -> None:
        self.b.add(city, "name", is_entity=True, entity=city, entity_type="city")

    def country(self, city: str) -> None:
        c = self.world.city_country[city]
        self.b.add(c, "name", is_entity=True, entity=c, entity_type="country")

    def number(self, n: int, digits: bool = False) -> None:
        text = str(n) if digits or n >= len(NUMBER_WORDS) else NUMBER_WORDS[n]
        self.b.add(text, "num", is_number=True, number=n)

    def topic_noun(self, forms: tuple[str, str], plural: bool) -> None:
        self.b.add(forms[1] if plural else forms[0], "noun", lemma=forms[0], plural=plural,
                   topic_word=self.topic)

    def topic_word(self, word: str, pos: str, **labels: Any) -> None:
        self.b.add(word, pos, lemma=word, topic_word=self.topic, **labels)

    def sent_adj(self, with_article: bool = False) -> None:
        s = self.sentiment
        word = self.rng.choice(POSITIVE_ADJS if s == "positive" else NEGATIVE_ADJS)
        if with_article:
            self.b.add(_article(word), "det")
        self.b.add(word, "adj", sentiment_word=s)

    def subject(self) -> bool:
        """Writes a subject; returns whether it is plural."""
        r = self.rng.random()
        if r < 0.3:
            self.name(self.hero)
            return False
        if r < 0.5:
            self.b.add(self.hero.pronoun, "pron", plural=False)
            return False
        if r < 0.65:
            self.name(self.hero)
            self.b.add("and", "conj")
            self.name(self.friend)
            return True
        plural = r >= 0.85
        self.b.add("the", "det")
        self.topic_noun(self.rng.choice(self.t.agents), plural)
        return plural

    def obj(self) -> None:
        r = self.rng.random()
        if r < 0.2:
            self.b.add(self.rng.choice(["some", "the"]), "det")
            self.topic_word(self.rng.choice(self.t.mass), "noun", plural=False)
            return
        noun = self.rng.choice(self.t.nouns)
        if r < 0.5:
            self.b.add("the", "det")
            self.topic_noun(noun, False)
        elif r < 0.65:
            self.b.add(_article(noun[0]), "det")
            self.topic_noun(noun, False)
        elif r < 0.85:
            self.b.add("the", "det")
            self.topic_noun(noun, True)
        else:
            self.number(self.rng.randint(2, 10))
            self.topic_noun(noun, True)

    # -- sentences ---------------------------------------------------------------------------
    def s_action(self) -> None:
        plural = self.subject()
        self.verb(self.rng.choice(self.t.verbs), plural, topic_word=self.topic)
        self.obj()
        r = self.rng.random()
        if r < 0.25:
            self.b.add("in", "prep")
            self.b.add("the", "det")
            self.topic_word(self.rng.choice(self.t.places), "noun", plural=False)
        elif r < 0.4:
            self.b.add("with", "prep")
            self.b.add("the", "det")
            self.topic_noun(self.rng.choice(self.t.nouns), self.rng.random() < 0.5)
        self.b.end_sentence()

    def s_describe(self) -> None:
        plural = self.rng.random() < 0.5
        self.b.add("the", "det")
        self.topic_noun(self.rng.choice(self.t.nouns), plural)
        self.be(plural)
        if self.rng.random() < 0.5:
            self.sent_adj()
        else:
            self.topic_word(self.rng.choice(self.t.adjs), "adj")
        self.b.end_sentence()

    def s_go(self) -> None:
        plural = self.subject()
        self.verb(("go", "goes", "went"), plural)
        self.b.add("to", "prep")
        self.b.add("the", "det")
        self.topic_word(self.rng.choice(self.t.places), "noun", plural=False)
        self.b.end_sentence()

    def s_there(self) -> None:
        n = self.rng.choice([1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20])
        plural = n > 1
        self.b.add("there", "other")
        self.be(plural)
        noun = self.rng.choice(self.t.nouns)
        if n == 1:
            self.b.add(_article(noun[0]), "det")
        else:
            self.number(n, digits=self.rng.random() < 0.3)
        self.topic_noun(noun, plural)
        self.b.add("in", "prep")
        self.b.add("the", "det")
        self.topic_word(self.rng.choice(self.t.places), "noun", plural=False)
        self.b.end_sentence()

    def s_sentiment(self) -> None:
        r = self.rng.random()
        if r < 0.3:
            self.b.add("it", "pron")
            self.be(False)
            self.sent_adj(with_article=True)
            self.b.add(self.rng.choice(["day", "morning", "evening"]), "noun", plural=False)
        elif r < 0.55:
            self.b.add(self.hero.pronoun, "pron", plural=False)
            self.verb(("feel", "feels", "felt"), False)
            self.sent_adj()
        elif r < 0.8:
            self.name(self.hero)
            self.verb(self.rng.choice(SENTIMENT_VERBS[self.sentiment]), False,
                      sentiment_word=self.sentiment)
            self.b.add("the", "det")
            self.topic_noun(self.rng.choice(self.t.nouns), self.rng.random() < 0.5)
        else:
            self.b.add("everything", "pron")
            self.be(False)
            self.sent_adj()
        self.b.end_sentence()

    def quote_content(self) -> None:
        r = self.rng.random()
        if r < 0.2:
            inter = self.rng.choice(INTERJECTIONS[self.sentiment])
            for w in inter.split():
                self.b.add(w, "other", sentiment_word=self.sentiment if w != "oh" else None)
            self.b.add(",", "punct")
        if r < 0.45:
            plural = self.rng.random() < 0.5
            self.b.add("the", "det")
            self.topic_noun(self.rng.choice(self.t.nouns), plural)
            self.be(plural, tense="present")
            if self.rng.random() < 0.6:
                self.sent_adj()
            else:
                self.topic_word(self.rng.choice(self.t.adjs), "adj")
        elif r < 0.7:
            self.b.add("we", "pron", plural=True)
            self.verb(self.rng.choice(SENTIMENT_VERBS[self.sentiment]), True, tense="present",
                      sentiment_word=self.sentiment)
            self.b.add("the", "det")
            self.topic_noun(self.rng.choice(self.t.nouns), True)
        else:
            self.b.add("we", "pron", plural=True)
            self.verb(("need", "needs", "needed"), True, tense="present")
            self.number(self.rng.randint(2, 10))
            self.topic_noun(self.rng.choice(self.t.nouns), True)

    def s_dialogue(self) -> None:
        r = self.rng.random()
        said = ("say", "says", "said")
        if r < 0.5:
            self.b.open_quote()
            self.quote_content()
            self.b.add(",", "punct")
            self.b.close_quote()
            self.verb(said, False)
            self.name(self.hero)
        elif r < 0.8:
            self.name(self.hero)
            self.verb(said, False)
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
            self.verb(("shout", "shouts", "shouted"), False)
            self.b.add("the", "det")
            self.topic_noun(self.rng.choice(self.t.agents), False)
        self.b.end_sentence()

    def s_count(self) -> None:
        n = self.rng.randint(2, 5)
        self.b.add(self.hero.pronoun, "pron", plural=False)
        self.verb(("count", "counts", "counted"), False)
        self.number(n)
        self.topic_noun(self.rng.choice(self.t.nouns), True)
        self.b.add(":", "punct")
        self.b.ctx["in_list"] = True
        for i in range(1, n + 1):
            self.number(i)
            if i < n:
                self.b.add(",", "punct")
        self.b.ctx.pop("in_list")
        self.b.end_sentence()

    def s_list(self) -> None:
        self.b.add(self.hero.pronoun, "pron", plural=False)
        self.verb(self.rng.choice(_LIST_VERBS), False)
        k = self.rng.randint(3, 4)
        pool = [(n, True) for n in self.t.nouns] + [((m, m), False) for m in self.t.mass]
        items = self.rng.sample(pool, k)
        self.b.ctx["in_list"] = True
        for i, (forms, countable) in enumerate(items):
            self.topic_noun(forms, countable)
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
        self.b.add(_article(c.job), "det")
        self.b.add(c.job, "noun", plural=False)
        if self.rng.random() < 0.5:
            self.b.add("from" if self.rng.random() < 0.5 else "in", "prep")
            self.place_name(c.city)
        self.b.ctx.pop("in_fact")
        self.b.end_sentence()

    def s_home(self) -> None:
        self.b.ctx["in_fact"] = True
        self.name(self.hero)
        self.verb(("live", "lives", "lived"), False)
        self.b.add("in", "prep")
        self.place_name(self.hero.city)
        r = self.rng.random()
        if r < 0.4:
            self.b.add(",", "punct")
            self.b.add("a", "det")
            self.b.add("city", "noun", plural=False)
            self.b.add("in", "prep")
            self.country(self.hero.city)
        elif r < 0.6:
            self.b.add(",", "punct")
            self.b.add("in", "prep")
            self.country(self.hero.city)
        self.b.ctx.pop("in_fact")
        self.b.end_sentence()

    def s_city(self, city: str) -> None:
        """A timeless fact: "Lyon is in France." (present) or "Lyon, a city in France, was
        busy." (past), so the narration keeps the story's tense."""
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
        """A trip to any city of the world, so every city's country gets stated."""
        city = self.rng.choice(sorted(self.world.city_country))
        self.b.ctx["in_fact"] = True
        plural = self.rng.random() < 0.3
        self.name(self.hero)
        if plural:
            self.b.add("and", "conj")
            self.name(self.friend)
        self.verb(("travel", "travels", "travelled"), plural)
        self.b.add("to", "prep")
        self.place_name(city)
        self.b.add(",", "punct")
        self.b.add("in", "prep")
        self.country(city)
        self.b.ctx.pop("in_fact")
        self.b.end_sentence()

    def s_pet(self) -> None:
        h = self.hero
        self.b.ctx["in_fact"] = True
        self.b.add(h.pronoun, "pron", plural=False)
        self.verb(("have", "has", "had"), False)
        self.b.add(_article(h.pet_species), "det")
        self.b.add(h.pet_species, "noun", plural=False)
        self.b.add(self.rng.choice(["called", "named"]), "other")
        self.b.add(h.pet_name, "name", is_entity=True, entity=h.pet_name, entity_type="pet")
        self.b.ctx.pop("in_fact")
        self.b.end_sentence()


_LIST_VERBS = _verbs("buy:bought need bring:brought pack")


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
    sentiment: str | None = None,
    tense: str | None = None,
    hero: str | None = None,
) -> Story:
    """One story with its factors and labelled spans.

    `rng_or_seed`: a `random.Random` (advanced in place, so successive calls give different
    stories) or an int seed (the same seed always gives the same story). The factors that are
    not given (topic, sentiment, tense, hero) are drawn at random.
    """
    rng = _rng(rng_or_seed)
    world = world or WORLD
    topic = _pick("topic", topic, TOPICS, rng)
    sentiment = _pick("sentiment", sentiment, SENTIMENTS, rng)
    tense = _pick("tense", tense, TENSES, rng)
    hero_c = world.characters[_pick("hero", hero, list(world.characters), rng)]
    friend_c = world.characters[
        rng.choice([n for n in world.characters if n != hero_c.name])
    ]
    story_labels = {"topic": topic, "sentiment": sentiment, "tense": tense}
    b = _Builder(story_labels)
    w = _Writer(rng, world, b, topic, sentiment, tense, hero_c, friend_c)

    # Opening: one or two facts about the hero and where the story happens.
    opening = rng.random()
    if opening < 0.3:
        w.s_job(hero_c)
    elif opening < 0.6:
        w.s_home()
    elif opening < 0.8:
        w.s_city(hero_c.city)
        w.s_job(hero_c)
    else:
        w.s_action()
    # Body: topic sentences with dialogue, counting, lists and more facts mixed in.
    body = [w.s_action, w.s_action, w.s_describe]
    body += [rng.choice([w.s_action, w.s_go, w.s_there, w.s_describe]) for _ in range(
        rng.randint(1, 3))]
    if rng.random() < 0.5:
        body.append(w.s_dialogue)
    if rng.random() < 0.3:
        body.append(w.s_count)
    if rng.random() < 0.35:
        body.append(w.s_list)
    if rng.random() < 0.3:
        body.append(w.s_pet)
    if rng.random() < 0.3:
        body.append(w.s_travel)
    if rng.random() < 0.2:
        body.append(lambda: w.s_job(friend_c))
    if rng.random() < 0.5:
        body.append(w.s_sentiment)
    first, rest = body[:2], body[2:]
    rng.shuffle(rest)
    for sentence in first + rest:
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


# --------------------------------------------------------------------------------------------
# Labels on tokens
# --------------------------------------------------------------------------------------------

SPECIAL_LABELS: dict[str, Any] = {
    **DEFAULT_LABELS, "topic": None, "sentiment": None, "tense": None, "sentence": -1,
    "pos": "special", "special": True, "word": None,
}
"""The labels of a BOS token (and of any token outside every span)."""


def _encode(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets from a transformers fast tokenizer or a tokenizers one."""
    if isinstance(tokenizer, tokenizers.Tokenizer):
        enc = tokenizer.encode(text, add_special_tokens=False)
        return list(enc.ids), [tuple(o) for o in enc.offsets]
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError) as err:
        raise TypeError(
            "labelled_tokens needs a fast tokenizer that returns offsets (a transformers "
            "PreTrainedTokenizerFast, or a tokenizers.Tokenizer); got "
            f"{type(tokenizer).__name__}."
        ) from err
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _bos_id(tokenizer: Any) -> int:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None and hasattr(tokenizer, "token_to_id"):
        bos = tokenizer.token_to_id(BOS_TOKEN)
    if bos is None:
        raise ValueError(f"The tokenizer has no BOS token; expected {BOS_TOKEN!r}.")
    return int(bos)


def labelled_tokens(
    story: Story, tokenizer: Any, add_bos: bool = True
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Token ids of `story.text` and one label dict per token.

    Each token takes the labels of the span that covers most of its characters, a space
    counting with the word after it (a token such as `."` that covers two spans takes the
    first of equal counts; a lone space token takes the word it precedes). Every
    dict has the word-level labels of `DEFAULT_LABELS`, the story-level `topic`,
    `sentiment` and `tense`, `special` (True only for BOS) and `word` (the span's text).
    With `add_bos` (default, as TransformerLens' `to_tokens` does) the first token is BOS.
    """
    ids, offsets = _encode(tokenizer, story.text)
    # Each character belongs to a span; a space belongs to the word after it, as the
    # leading space of a GPT-2 style token does.
    owner = [-1] * len(story.text)
    prev_end = 0
    for i, s in enumerate(story.spans):
        owner[prev_end:s.end] = [i] * (s.end - prev_end)
        prev_end = s.end
    labels: list[dict[str, Any]] = []
    for start, end in offsets:
        counts: dict[int, int] = {}
        for j in owner[start:end]:
            if j >= 0:
                counts[j] = counts.get(j, 0) + 1
        if not counts:
            labels.append(dict(SPECIAL_LABELS, special=False))
            continue
        best = max(counts, key=lambda j: (counts[j], -j))
        span = story.spans[best]
        labels.append({**span.labels, "special": False, "word": span.text})
    if add_bos:
        ids = [_bos_id(tokenizer)] + ids
        labels = [dict(SPECIAL_LABELS)] + labels
    return torch.tensor(ids, dtype=torch.long), labels


def _feature_names() -> list[str]:
    names = [f"topic={t}" for t in TOPICS] + [f"topic_word={t}" for t in TOPICS]
    names += [f"sentiment={s}" for s in SENTIMENTS] + [f"sentiment_word={s}" for s in SENTIMENTS]
    names += [f"tense={t}" for t in TENSES] + [f"verb_tense={t}" for t in TENSES]
    names += ["plural", "singular", "in_quote", "quote_mark", "in_list", "in_fact", "is_number",
              "is_entity"] + [f"entity_type={e}" for e in ENTITY_TYPES]
    names += [f"pos={p}" for p in POS_TAGS] + ["special"]
    return names


FEATURES: list[str] = _feature_names()
"""The binary ground-truth features of `feature_matrix`, in column order."""


def _feature_value(lab: dict[str, Any], name: str) -> bool:
    if name == "plural":
        return lab["plural"] is True
    if name == "singular":
        return lab["plural"] is False
    key, eq, value = name.partition("=")
    if eq:
        return lab.get(key) == value
    return bool(lab.get(key))


def feature_matrix(labels: Sequence[dict[str, Any]], features: Sequence[str] | None = None
                   ) -> torch.Tensor:
    """A [n_tokens, n_features] bool tensor of the binary features (default `FEATURES`)."""
    names = list(features) if features is not None else FEATURES
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"Unknown features {unknown}; the known ones are in FEATURES.")
    rows = [[_feature_value(lab, n) for n in names] for lab in labels]
    return torch.tensor(rows, dtype=torch.bool).reshape(len(labels), len(names))


# --------------------------------------------------------------------------------------------
# Scoring text (for continuations and steering)
# --------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"[A-Za-z]+")


def topic_counts(text: str) -> dict[str, int]:
    """How many words of each topic's vocabulary `text` contains."""
    counts = dict.fromkeys(TOPICS, 0)
    for w in _WORD_RE.findall(text.lower()):
        t = TOPIC_OF_WORD.get(w)
        if t is not None:
            counts[t] += 1
    return counts


def classify_topic(text: str) -> str | None:
    """The topic with the most vocabulary words in `text` (None when there are none; ties go
    to the first in `TOPICS`)."""
    counts = topic_counts(text)
    best = max(TOPICS, key=lambda t: counts[t])
    return best if counts[best] > 0 else None


def sentiment_score(text: str) -> int:
    """Positive minus negative sentiment words in `text`."""
    score = 0
    for w in _WORD_RE.findall(text.lower()):
        s = SENTIMENT_OF_WORD.get(w)
        score += 1 if s == "positive" else -1 if s == "negative" else 0
    return score


def topic_prompt(story: Story, n_topic_words: int = 2) -> str:
    """The start of `story` up to the end of the sentence holding its `n_topic_words`-th word
    of the story's topic (the whole text if it has fewer): a prompt whose topic is clear."""
    seen = 0
    for i, span in enumerate(story.spans):
        if span.labels["topic_word"] == story.factors["topic"]:
            seen += 1
            if seen == n_topic_words:
                sentence = span.labels["sentence"]
                end = span.end
                for later in story.spans[i:]:
                    if later.labels["sentence"] != sentence:
                        break
                    end = later.end
                return story.text[:end]
    return story.text
