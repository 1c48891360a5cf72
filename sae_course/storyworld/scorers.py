"""Scoring any text as StoryWorld, without an LLM: what it is about and whether it is well formed.

Part 06 scores steered continuations with these instead of an LLM judge:
- `classify_topic`, `classify_subtopic`: the topic (subtopic) with the most vocabulary words;
- `sentiment_score`, `classify_sentiment`: positive minus negative sentiment words;
- `classify_tense`: present or past, from the verbs of the narration (quotes are skipped,
  since speech is always in the present tense);
- `sentence_validity` / `grammatical_fraction`: which sentences are well-formed StoryWorld
  sentences (one of the grammar's templates, with agreement of number and article, and
  correct counting);
- `fact_consistency`: the fixed facts a text states, each checked against the world.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import lru_cache

from sae_course.storyworld.grammar import ALL_VERBS, BE_FORMS, LIST_VERBS, Story
from sae_course.storyworld.vocabulary import (
    INTERJECTIONS,
    NUMBER_WORDS,
    SENTIMENT_ADJS,
    SENTIMENT_ADVERBS,
    SENTIMENT_OF_WORD,
    SENTIMENT_VERBS,
    SUBTOPIC_DATA,
    SUBTOPIC_OF_WORD,
    SUBTOPICS,
    TOPIC_DATA,
    TOPIC_OF_WORD,
    TOPICS,
)
from sae_course.storyworld.world import JOBS, PET_SPECIES, WORLD, World

_WORD_RE = re.compile(r"[A-Za-z]+")


def _counts(text: str, of_word: dict[str, str], classes: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(classes, 0)
    for w in _WORD_RE.findall(text.lower()):
        c = of_word.get(w)
        if c is not None:
            counts[c] += 1
    return counts


def _argmax(counts: dict[str, int], classes: list[str]) -> str | None:
    best = max(classes, key=lambda c: counts[c])
    return best if counts[best] > 0 else None


def topic_counts(text: str) -> dict[str, int]:
    """How many words of each topic's vocabulary (its subtopics' included) `text` contains."""
    return _counts(text, TOPIC_OF_WORD, TOPICS)


def classify_topic(text: str) -> str | None:
    """The topic with the most vocabulary words in `text` (None when there are none; ties go
    to the first in `TOPICS`)."""
    return _argmax(topic_counts(text), TOPICS)


def subtopic_counts(text: str) -> dict[str, int]:
    """How many words of each subtopic's own vocabulary `text` contains."""
    return _counts(text, SUBTOPIC_OF_WORD, SUBTOPICS)


def classify_subtopic(text: str, topic: str | None = None) -> str | None:
    """The subtopic with the most of its own words in `text`, among `topic`'s subtopics when
    a topic is given (None when there are none; ties go to the first in `SUBTOPICS`)."""
    classes = SUBTOPICS if topic is None else list(TOPIC_DATA[topic].subtopics)
    return _argmax(subtopic_counts(text), classes)


def sentiment_score(text: str) -> int:
    """Positive minus negative sentiment words in `text`."""
    score = 0
    for w in _WORD_RE.findall(text.lower()):
        s = SENTIMENT_OF_WORD.get(w)
        score += 1 if s == "positive" else -1 if s == "negative" else 0
    return score


def classify_sentiment(text: str) -> str | None:
    """"positive", "negative", or None when the sentiment words balance (or there are none)."""
    score = sentiment_score(text)
    return "positive" if score > 0 else "negative" if score < 0 else None


def _tense_of_forms() -> dict[str, str]:
    out: dict[str, str] = {}
    for base, third, past in ALL_VERBS:
        if past in (base, third):
            continue  # a form that does not show its tense
        out[third] = out[base] = "present"
        out[past] = "past"
    for (tense, _plural), form in BE_FORMS.items():
        out[form] = tense
    return out


_TENSE_OF_FORM = _tense_of_forms()


def _outside_quotes(text: str) -> str:
    return re.sub(r'"[^"]*"', " ", text)


def tense_counts(text: str) -> dict[str, int]:
    """Verbs in the present and in the past tense in `text`, outside quotes."""
    counts = {"present": 0, "past": 0}
    for w in _WORD_RE.findall(_outside_quotes(text).lower()):
        t = _TENSE_OF_FORM.get(w)
        if t is not None:
            counts[t] += 1
    return counts


def classify_tense(text: str) -> str | None:
    """"present" or "past": the tense most verbs of the narration are in (None on a tie)."""
    c = tense_counts(text)
    return "present" if c["present"] > c["past"] else "past" if c["past"] > c["present"] else None


def concept_vocabulary(concept: str) -> dict[str, str]:
    """word -> value for the words each scorer counts: "topic", "subtopic", "sentiment" or
    "tense" (for tense, the verb forms that show it)."""
    vocabularies = {"topic": TOPIC_OF_WORD, "subtopic": SUBTOPIC_OF_WORD,
                    "sentiment": SENTIMENT_OF_WORD, "tense": _TENSE_OF_FORM}
    if concept not in vocabularies:
        raise ValueError(f"Unknown concept {concept!r}: choose one of {', '.join(vocabularies)}.")
    return dict(vocabularies[concept])


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


# --------------------------------------------------------------------------------------------
# Well-formed sentences
# --------------------------------------------------------------------------------------------
# A sentence is tagged word by word (a word may have several tags: "plough" is a noun and a
# verb), and it is well formed when one tagging matches one of the grammar's templates below.
# Templates are sequences of tags, each followed by a space.


def _tag_table(world: World) -> dict[str, set[str]]:
    tags: dict[str, set[str]] = {}

    def put(word: str, tag: str) -> None:
        tags.setdefault(word.lower(), set()).add(tag)

    for t in TOPIC_DATA.values():
        for sg, pl in t.agents:
            put(sg, "AG")
            put(pl, "AGS")
        for w in t.places:
            put(w, "PL")
        for w in t.adjs:
            put(w, "TA")
    for s in SUBTOPIC_DATA.values():
        for sg, pl in s.nouns:
            put(sg, "N")
            put(pl, "NS")
        for w in s.mass:
            put(w, "M")
        for base, third, past in s.verbs:
            put(base, "V0")
            put(third, "V3")
            put(past, "VD")
        for w in s.adjs:
            put(w, "TA")
    for ws in SENTIMENT_ADJS.values():
        for w in ws:
            put(w, "SA")
    for ws in SENTIMENT_ADVERBS.values():
        for w in ws:
            put(w, "ADV")
    for vs in SENTIMENT_VERBS.values():
        for base, third, past in vs:
            put(base, "SV0")
            put(third, "SV3")
            put(past, "SVD")
    for _base, third, past in LIST_VERBS:
        put(third, "LV")
        put(past, "LV")
    for w in NUMBER_WORDS:
        put(w, "NUMW")
    for w in JOBS:
        put(w, "JOB")
    for w in PET_SPECIES:
        put(w, "SPECIES")
    for c in world.characters.values():
        put(c.name, "NAME")
        put(c.pet_name, "PET")
    for city, country in world.city_country.items():
        put(city, "CITY")
        put(country, "COUNTRY")
    for w in ("she", "he"):
        put(w, "PRON")
    for ws in INTERJECTIONS.values():
        for x in ws:
            if " " not in x:
                put(x, "INTERJ")
    return tags


def _alt(*atoms: str) -> str:
    return "(?:" + "|".join(atoms) + ")"


def _opt(atom: str) -> str:
    return "(?:" + atom + ")?"


def _templates() -> re.Pattern[str]:
    def lit(*words: str) -> str:
        return "".join(re.escape(w) + " " for w in words)

    sg = _alt("NAME ", "PRON ", lit("the") + "AG ")
    pl = _alt("NAME and NAME ", lit("the") + "AGS ")
    subj = _alt(sg, pl)
    num = _alt("NUMW ", "DIG ")
    adj = _alt("SA ", "TA ")
    det_sg = _alt(lit("the"), lit("a"), lit("an"))
    np_obj = _alt(_alt(lit("some"), lit("the")) + "M ", det_sg + _opt(adj) + "N ",
                  lit("the") + _opt(adj) + "NS ", num + "NS ")
    pp = _alt(lit("in", "the") + "PL ", lit("with", "the") + _opt(adj) + _alt("N ", "NS "))

    def agree(v0: str, v3: str, vd: str) -> str:
        return _alt(sg + v3, pl + v0, subj + vd)

    interj = _alt("INTERJ ", lit("oh", "no"))
    quote = _opt(interj + lit(",")) + _alt(
        lit("the") + "N " + lit("is") + adj, lit("the") + "NS " + lit("are") + adj,
        lit("we") + "SV0 " + lit("the") + "NS ", lit("we", "need") + num + "NS ")
    be_sg, be_pl = _alt(lit("is"), lit("was")), _alt(lit("are"), lit("were"))
    item = _alt("NS ", "M ")
    sentences = [
        agree("V0 ", "V3 ", "VD ") + np_obj + _opt(pp) + _opt("ADV ") + lit("."),
        lit("the") + _alt("N " + be_sg, "NS " + be_pl) + adj + lit("."),
        agree(*(lit(w) for w in ("go", "goes", "went"))) + lit("to", "the") + "PL "
        + _opt("ADV ") + lit("."),
        lit("there") + _alt(be_sg + _alt(lit("a"), lit("an")) + "N ", be_pl + num + "NS ")
        + lit("in", "the") + "PL " + lit("."),
        lit("it") + be_sg + _alt(lit("a"), lit("an")) + "SA "
        + _alt(lit("day"), lit("morning"), lit("evening")) + lit("."),
        "PRON " + _alt(lit("feels"), lit("felt")) + "SA " + lit("."),
        "NAME " + _alt("SV3 ", "SVD ") + lit("the") + _alt("N ", "NS ") + lit("."),
        lit("everything") + be_sg + "SA " + lit("."),
        lit('"') + quote + lit(",", '"') + _alt(lit("says"), lit("said")) + "NAME " + lit("."),
        "NAME " + _alt(lit("says"), lit("said")) + lit(",", '"') + quote + lit(".", '"'),
        lit('"') + quote + lit("!", '"') + _alt(lit("shouts"), lit("shouted")) + lit("the")
        + "AG " + lit("."),
        "PRON " + _alt(lit("counts"), lit("counted")) + "NUMW NS " + lit(":") + "NUMW "
        + "(?:" + lit(",") + "NUMW )*" + lit("."),
        "PRON LV " + item + "(?:" + lit(",") + item + ")*" + lit("and") + item + lit("."),
        "NAME " + be_sg + _alt(lit("a"), lit("an")) + "JOB " + _opt(lit("from") + "CITY ")
        + lit("."),
        "NAME " + _alt(lit("lives"), lit("lived")) + lit("in") + "CITY "
        + _opt(lit(",", "in") + "COUNTRY ") + lit("."),
        "NAME " + _alt(lit("has"), lit("had")) + _alt(lit("a"), lit("an")) + "SPECIES "
        + lit("called") + "PET " + lit("."),
        "CITY " + lit("is", "in") + "COUNTRY " + lit("."),
        "CITY " + lit(",", "a", "city", "in") + "COUNTRY " + lit(",", "was") + "SA " + lit("."),
        _alt("NAME " + lit("travels"), "NAME " + lit("travelled"),
             "NAME and NAME " + _alt(lit("travel"), lit("travelled"))) + lit("to") + "CITY "
        + lit(",", "in") + "COUNTRY " + lit("."),
    ]
    return re.compile("^" + _alt(*sentences) + "$")


@lru_cache(maxsize=4)
def _grammar(world_seed: int) -> tuple[dict[str, set[str]], re.Pattern[str]]:
    world = WORLD if world_seed == WORLD.seed else World.from_seed(world_seed)
    return _tag_table(world), _templates()


_PIECE_RE = re.compile(r'[A-Za-z]+|\d+|[.,!?:"]')


def split_sentences(text: str) -> list[str]:
    """`text` cut into sentences (a quotation stays inside the sentence that holds it)."""
    sentences, start, inside = [], 0, False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            inside = not inside
            if not inside and i > 0 and text[i - 1] == ".":
                sentences.append(text[start:i + 1].strip())
                start = i + 1
        elif ch in ".!?" and not inside:
            sentences.append(text[start:i + 1].strip())
            start = i + 1
        i += 1
    rest = text[start:].strip()
    if rest:
        sentences.append(rest)
    return [s for s in sentences if s]


def _articles_agree(words: list[str]) -> bool:
    for a, b in itertools.pairwise(words):
        if a == "a" and b[0] in "aeiou" or a == "an" and b[0] not in "aeiou":
            return False
    return True


def _counts_correctly(words: list[str]) -> bool:
    if ":" not in words or not {"counts", "counted"} & set(words):
        return True
    colon = words.index(":")
    total = words[colon - 2]
    said = [w for w in words[colon + 1:] if w not in (",", ".")]
    want = NUMBER_WORDS[1:NUMBER_WORDS.index(total) + 1] if total in NUMBER_WORDS else None
    return said == want


def is_well_formed(sentence: str, world: World | None = None) -> bool:
    """Whether `sentence` is one the StoryWorld grammar can write (any topic and sentiment
    words in their slots; agreement of subject and verb, of article and word, and counting)."""
    tags, pattern = _grammar((world or WORLD).seed)
    pieces = _PIECE_RE.findall(sentence)
    if "".join(pieces) != re.sub(r"\s+", "", sentence) or not pieces:
        return False  # characters the grammar never writes
    if not (pieces[0][0].isupper() or pieces[0] == '"'):
        return False
    words = [p.lower() for p in pieces]
    if not _articles_agree(words) or not _counts_correctly(words):
        return False
    options = []
    for p, w in zip(pieces, words, strict=True):
        found = {w} | tags.get(w, set())
        if p.isdigit():
            found = {"DIG"}
        options.append(sorted(found))
        if len(options[-1]) == 1 and options[-1][0] == w and w not in _LITERALS:
            return False  # a word that is not in the language
    for combo in itertools.islice(itertools.product(*options), 256):
        if pattern.match("".join(t + " " for t in combo)):
            return True
    return False


_LITERALS = set(
    "the a an some in with to there it is are was were everything day morning evening feels "
    "felt says said shouts shouted counts counted and we need lives lived has had called from "
    "city travels travel travelled go goes went oh no . , ! ? : \"".split()
)


def sentence_validity(text: str, world: World | None = None) -> list[tuple[str, bool]]:
    """Each sentence of `text` with whether it is well formed (see `is_well_formed`)."""
    return [(s, is_well_formed(s, world)) for s in split_sentences(text)]


def grammatical_fraction(text: str, world: World | None = None) -> float:
    """The fraction of `text`'s sentences that are well-formed StoryWorld sentences (0.0 for a
    text with no sentence). An unfinished last sentence counts as not well formed."""
    verdicts = sentence_validity(text, world)
    return sum(ok for _, ok in verdicts) / len(verdicts) if verdicts else 0.0


# --------------------------------------------------------------------------------------------
# Facts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatedFact:
    """A fact a text states, and whether the world agrees."""

    subject: str
    relation: str  # job, lives_in, pet_species, pet_name, is_in
    object: str
    true: bool


def fact_consistency(text: str, world: World | None = None) -> list[StatedFact]:
    """Every fixed fact `text` states ("Mara is a tailor", "Mara lives in Lyon", "Mara has a
    cat called Pip", "Lyon is in France", "Lyon, a city in France", "to Lyon, in France"),
    each with whether it is true in `world`. The share of true ones scores a continuation."""
    world = world or WORLD
    chars, cities = world.characters, world.city_country
    names = "|".join(map(re.escape, chars))
    places = "|".join(map(re.escape, cities))
    out: list[StatedFact] = []
    for name, job in re.findall(rf"\b({names}) (?:is|was) an? (\w+)", text):
        if job in JOBS:
            out.append(StatedFact(name, "job", job, chars[name].job == job))
    for name, city in re.findall(rf"\b({names}) (?:lives|lived) in (\w+)", text):
        out.append(StatedFact(name, "lives_in", city, chars[name].city == city))
    for name, species, pet in re.findall(
            rf"\b({names}) (?:has|had) an? (\w+) called (\w+)", text):
        out.append(StatedFact(name, "pet_species", species, chars[name].pet_species == species))
        out.append(StatedFact(name, "pet_name", pet, chars[name].pet_name == pet))
    for city, country in re.findall(
            rf"\b({places})(?: is in|, a city in|, in) (\w+)", text):
        out.append(StatedFact(city, "is_in", country, cities[city] == country))
    return out
