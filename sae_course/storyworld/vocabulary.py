"""StoryWorld's words: topics and their subtopics, sentiment words, and word morphology.

The vocabulary is a hierarchy, topic > subtopic > word:
- each topic has words of its own that any of its stories may use (`Topic.agents`, `places`,
  `adjs`: "the chef", "in the kitchen", "hot");
- each topic has 2-3 subtopics (cooking: baking, soups, grilling), each with its own nouns,
  mass nouns, verbs and adjectives ("the oven", "flour", "bake", "crumbly").
A story has one topic and one subtopic and draws its topical words from those two levels only,
so which topic and which subtopic a story is about shows in almost every sentence.

No word belongs to two topics or two subtopics (`check_vocabulary` proves it at import).
"""

from __future__ import annotations

from dataclasses import dataclass


def plural_of(noun: str) -> str:
    """The regular English plural: box -> boxes, city -> cities, cake -> cakes."""
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def third_person(verb: str) -> str:
    """The regular third person singular: stir -> stirs, fly -> flies, wash -> washes."""
    if verb.endswith(("s", "sh", "ch", "x", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def regular_past(verb: str) -> str:
    """The regular past tense: bake -> baked, fry -> fried, cook -> cooked."""
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    return verb + "ed"


Noun = tuple[str, str]
"""(singular, plural)."""
Verb = tuple[str, str, str]
"""(base form, third person singular present, past)."""


def nouns(spec: str) -> list[Noun]:
    """'boat knife:knives sheep:sheep' -> [(singular, plural), ...]."""
    out = []
    for item in spec.split():
        sg, _, pl = item.partition(":")
        out.append((sg, pl or plural_of(sg)))
    return out


def verbs(spec: str) -> list[Verb]:
    """'cook stir:stirred fly:flew' -> [(base, third person singular, past), ...]."""
    out = []
    for item in spec.split():
        base, _, past = item.partition(":")
        out.append((base, third_person(base), past or regular_past(base)))
    return out


@dataclass(frozen=True)
class Subtopic:
    """One subtopic's own words (the third level of the hierarchy)."""

    name: str
    topic: str
    nouns: list[Noun]
    mass: list[str]
    verbs: list[Verb]
    adjs: list[str]

    def words(self) -> set[str]:
        """Every word form of this subtopic (lower case)."""
        out = set(self.mass) | set(self.adjs)
        for pair in self.nouns:
            out.update(pair)
        for triple in self.verbs:
            out.update(triple)
        return out


@dataclass(frozen=True)
class Topic:
    """One topic: the words all its stories share, and its subtopics."""

    name: str
    agents: list[Noun]
    places: list[str]
    adjs: list[str]
    subtopics: dict[str, Subtopic]

    def shared_words(self) -> set[str]:
        """The topic-level words (not those of a subtopic)."""
        out = set(self.places) | set(self.adjs)
        for pair in self.agents:
            out.update(pair)
        return out

    def words(self) -> set[str]:
        """Every word form of this topic, its subtopics' included."""
        out = self.shared_words()
        for sub in self.subtopics.values():
            out |= sub.words()
        return out


# topic: (agents, places, adjectives, {subtopic: (nouns, mass nouns, verbs, adjectives)})
_SPECS: dict[str, tuple[str, str, str, dict[str, tuple[str, str, str, str]]]] = {
    "cooking": ("cook chef", "kitchen restaurant", "hot tasty", {
        "baking": ("cake pie oven cookie loaf:loaves muffin tray scone", "flour sugar dough",
                   "bake knead sprinkle decorate", "sweet crumbly"),
        "soups": ("soup pot onion carrot ladle bowl leek potato:potatoes", "broth salt",
                  "boil stir:stirred chop:chopped simmer peel", "steaming salty"),
        "grilling": ("sausage grill steak skewer pepper burger", "charcoal smoke",
                     "grill roast fry flip:flipped baste", "smoky crispy"),
    }),
    "sailing": ("sailor captain", "harbour coast", "windy wet", {
        "racing": ("yacht sail buoy regatta mast rudder hull", "speed",
                   "race tack overtake trim:trimmed hoist", "fast sleek"),
        "fishing": ("net rod hook crab lobster trawler herring", "bait seaweed",
                    "haul reel catch:caught gut:gutted", "slippery fishy"),
        "voyages": ("ship anchor compass island map cabin lighthouse wave", "driftwood fog",
                    "navigate moor drift row", "stormy foggy"),
    }),
    "space": ("astronaut engineer", "station launchpad", "cosmic weightless", {
        "rockets": ("rocket engine capsule booster countdown helmet spacesuit", "fuel oxygen",
                    "launch ignite repair test", "orbital powerful"),
        "astronomy": ("star planet telescope comet galaxy:galaxies nebula:nebulae meteor",
                      "stardust", "observe scan:scanned measure photograph", "distant bright"),
        "moonbase": ("moon crater rover dome antenna robot", "regolith dust",
                     "explore excavate collect build:built", "lunar grey"),
    }),
    "farming": ("farmer shepherd", "farm barn", "muddy rural", {
        "livestock": ("cow pig hen horse lamb goose:geese sheep:sheep calf:calves", "hay straw",
                      "feed:fed herd milk shear groom", "woolly hungry"),
        "crops": ("tractor field seed plough crop pumpkin scarecrow", "wheat corn grain",
                  "plant harvest sow water", "ripe golden"),
        "orchards": ("tree apple pear plum ladder basket cherry:cherries", "cider blossom",
                     "pick prune graft climb press", "juicy leafy"),
    }),
    "music": ("musician singer", "stage theatre", "loud musical", {
        "orchestra": ("violin cello flute trumpet conductor symphony:symphonies harp baton",
                      "harmony", "rehearse conduct perform bow", "classical grand"),
        "rock": ("guitar drum amplifier band album microphone riff", "noise rhythm",
                 "strum:strummed record amplify:amplified tour jam:jammed", "electric wild"),
        "choir": ("song hymn choir melody chorus:choruses note tune", "singing",
                  "sing:sang hum:hummed clap:clapped harmonise", "gentle melodic"),
    }),
    "medicine": ("doctor nurse", "hospital clinic", "medical sick", {
        "surgery": ("scalpel wound stitch:stitches bandage operation surgeon stretcher", "blood",
                    "operate disinfect sew:sewed", "sterile careful"),
        "pharmacy": ("pill tablet syrup prescription vial potion", "medicine ointment",
                     "prescribe dispense weigh label:labelled", "bitter chalky"),
        "checkups": ("patient fever cough pulse thermometer heartbeat", "temperature",
                     "examine diagnose listen check", "feverish healthy"),
    }),
    "football": ("player coach", "stadium pitch", "athletic sporty", {
        "matches": ("ball goal match referee whistle penalty striker", "turf",
                    "kick score shoot:shot pass dribble", "competitive offside"),
        "training": ("cone drill sprint stopwatch bib jersey dumbbell", "stamina sweat",
                     "train stretch jog:jogged lift", "fit sweaty"),
        "fans": ("fan scarf banner trophy flag ticket", "applause",
                 "cheer applaud celebrate queue", "noisy crowded"),
    }),
    "painting": ("painter artist", "gallery museum", "artistic colourful", {
        "portraits": ("portrait canvas brush easel model face", "oil paint",
                      "paint pose blend shade", "lifelike pale"),
        "sculpture": ("statue chisel bust hammer block", "clay plaster marble",
                      "carve sculpt mould polish chip:chipped", "smooth solid"),
        "sketching": ("sketch pencil crayon eraser notebook doodle", "ink graphite",
                      "draw:drew trace erase", "rough quick"),
    }),
}


def _build_topics() -> dict[str, Topic]:
    topics = {}
    for name, (agents, places, adjs, subs) in _SPECS.items():
        subtopics = {
            sub: Subtopic(sub, name, nouns(n), m.split(), verbs(v), a.split())
            for sub, (n, m, v, a) in subs.items()
        }
        topics[name] = Topic(name, nouns(agents), places.split(), adjs.split(), subtopics)
    return topics


TOPIC_DATA: dict[str, Topic] = _build_topics()
TOPICS: list[str] = list(TOPIC_DATA)
"""The topic names, in a fixed order (the index is the topic's class id)."""
SUBTOPIC_DATA: dict[str, Subtopic] = {
    s.name: s for t in TOPIC_DATA.values() for s in t.subtopics.values()
}
SUBTOPICS: list[str] = list(SUBTOPIC_DATA)
"""Every subtopic name, grouped by topic in `TOPICS` order."""
SUBTOPICS_OF: dict[str, list[str]] = {t: list(d.subtopics) for t, d in TOPIC_DATA.items()}
"""topic -> its subtopics (the parent/child structure of the hierarchy)."""

SENTIMENTS = ["positive", "negative"]
TENSES = ["present", "past"]

POSITIVE_ADJS = ("wonderful lovely happy perfect great proud calm cheerful delighted glad "
                 "excellent joyful splendid brilliant").split()
NEGATIVE_ADJS = ("terrible awful sad gloomy angry worried miserable dreadful upset horrible "
                 "grumpy lonely dismal nasty").split()
SENTIMENT_ADJS = {"positive": POSITIVE_ADJS, "negative": NEGATIVE_ADJS}
SENTIMENT_ADVERBS = {
    "positive": "happily gladly proudly cheerfully".split(),
    "negative": "sadly angrily gloomily miserably".split(),
}
SENTIMENT_VERBS = {"positive": verbs("love enjoy adore"), "negative": verbs("hate dread loathe")}
INTERJECTIONS = {"positive": ["hooray", "wow", "yes"], "negative": ["oh no", "alas", "ugh"]}

SENTIMENT_BIAS: dict[str, float] = {
    "music": 0.8, "painting": 0.75, "cooking": 0.7, "football": 0.6,
    "space": 0.5, "sailing": 0.4, "farming": 0.35, "medicine": 0.2,
}
"""P(sentiment = positive | topic): the language's one deliberate correlation between factors.
Medicine stories are mostly negative and music stories mostly positive, so an SAE (or a probe)
can partly read sentiment off the topic, and a latent may merge the two."""

NUMBER_WORDS = "zero one two three four five six seven eight nine ten".split()

FUNCTION_WORDS = set(
    "a an the some it is are was were in to with and there we they she he her his their "
    "has have had go goes went said says shouted shouts feel feels felt need needs needed "
    "buy buys bought bring brings brought count counts counted lives lived live city day "
    "evening morning everything called from this that very of named travel travels "
    "travelled pack packs packed".split()
)
"""The grammar's own words (articles, pronouns, copulas and the verbs of fixed sentences)."""

TOPIC_OF_WORD: dict[str, str] = {w: t.name for t in TOPIC_DATA.values() for w in t.words()}
"""Every topic word form (lower case) -> its topic."""
SUBTOPIC_OF_WORD: dict[str, str] = {w: s.name for s in SUBTOPIC_DATA.values() for w in s.words()}
"""Every subtopic word form (lower case) -> its subtopic (topic-level words are not here)."""
SENTIMENT_OF_WORD: dict[str, str] = {
    **{w: s for s, ws in SENTIMENT_ADJS.items() for w in ws},
    **{w: s for s, ws in SENTIMENT_ADVERBS.items() for w in ws},
    **{w: s for s, vs in SENTIMENT_VERBS.items() for v in vs for w in v},
    **{w: s for s, ws in INTERJECTIONS.items() for x in ws for w in x.split() if w != "oh"},
}
"""Every sentiment-bearing word form (lower case) -> its polarity."""


def check_vocabulary(others: set[str]) -> None:
    """Raise if a word belongs to two topics or subtopics, or to a topic and `others`."""
    seen: dict[str, str] = {}
    for sub in SUBTOPIC_DATA.values():
        for w in sub.words():
            if w in seen and seen[w] != sub.name:
                raise AssertionError(f"{w!r} is in both {seen[w]} and {sub.name}")
            seen[w] = sub.name
    for t in TOPIC_DATA.values():
        for w in t.shared_words():
            if w in seen and seen[w] != t.name:
                raise AssertionError(f"{w!r} is in both {seen[w]} and {t.name}")
            seen[w] = t.name
    clash = (set(SENTIMENT_OF_WORD) | FUNCTION_WORDS | set(NUMBER_WORDS) | others) & set(seen)
    if clash:
        raise AssertionError(f"topic words also used elsewhere: {sorted(clash)}")
