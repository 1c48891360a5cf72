"""StoryWorld's world: characters and places, their fixed facts, and how often each appears.

Facts never change within a world: a character always has the same job, pronoun, pet and home
city, and a city is always in the same country. The stories state those facts ("Mara is a
tailor.", "Lyon is in France."), so a model trained on them has to memorise them.

Frequencies follow a Zipf law (the k-th most common entity is drawn with weight 1 / k): a few
characters and cities appear in most stories, and a long tail appears rarely. That tail is what
lets Part 05 show rare features (and dead latents) with the truth known. `World.character_rank`
says where an entity sits (rank 1 is the most common).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ENTITY_TYPES = ["character", "pet", "city", "country"]

# 120 characters: (name, pronoun). Their order is their Zipf rank (the first is most common).
_CHARACTERS = (
    "Mara:she Tom:he Lena:she Omar:he Ivy:she Noah:he Sara:she Leo:he Nina:she Hugo:he "
    "Ada:she Finn:he Rosa:she Eli:he Maya:she Ben:he Zoe:she Ravi:he Ana:she Jack:he "
    "Mia:she Theo:he Lucy:she Sam:he Elsa:she Igor:he Tara:she Oscar:he Vera:she Milo:he "
    "Iris:she Felix:he Nora:she Amos:he Greta:she Dario:he Hana:she Kofi:he Lola:she Axel:he "
    "Petra:she Jonas:he Alma:she Ezra:he Clara:she Rufus:he Dora:she Silas:he Edith:she "
    "Basil:he Freya:she Tobias:he Wanda:she Cyrus:he Ingrid:she Malik:he Olga:she Pablo:he "
    "Ruth:she Stefan:he Una:she Victor:he Yara:she Anton:he Bianca:she Caspar:he Delia:she "
    "Emil:he Fiona:she Gideon:he Helga:she Ivan:he Juno:she Kasper:he Leona:she Magnus:he "
    "Nadia:she Otto:he Paula:she Quentin:he Rhea:she Soren:he Thea:she Ulrich:he Viola:she "
    "Wilbur:he Xenia:she Yusuf:he Zelda:she Albert:he Beatrix:she Conrad:he Daphne:she "
    "Edgar:he Flora:she Gustav:he Hilda:she Ignatius:he Jolene:she Klaus:he Lorna:she "
    "Mortimer:he Nell:she Orville:he Prudence:she Reginald:he Sybil:she Thaddeus:he "
    "Ursula:she Vernon:he Winifred:she Barnaby:he Cordelia:she Desmond:he Eugenia:she "
    "Fergus:he Gwendolyn:she Horace:he Imogen:she Jasper:he Kendra:she Lionel:he"
).split()

# 36 cities in 18 countries; their order is their Zipf rank as travel destinations.
CITY_COUNTRY: dict[str, str] = {
    "Lyon": "France", "Porto": "Portugal", "Milan": "Italy", "Oslo": "Norway",
    "Kyoto": "Japan", "Cairo": "Egypt", "Lima": "Peru", "Dublin": "Ireland",
    "Hamburg": "Germany", "Madrid": "Spain", "Krakow": "Poland", "Nairobi": "Kenya",
    "Hanoi": "Vietnam", "Quito": "Ecuador", "Tunis": "Tunisia", "Bergen": "Norway",
    "Osaka": "Japan", "Naples": "Italy", "Cusco": "Peru", "Cork": "Ireland",
    "Munich": "Germany", "Seville": "Spain", "Gdansk": "Poland", "Mombasa": "Kenya",
    "Hue": "Vietnam", "Guayaquil": "Ecuador", "Sfax": "Tunisia", "Paris": "France",
    "Lisbon": "Portugal", "Alexandria": "Egypt", "Reykjavik": "Iceland", "Akureyri": "Iceland",
    "Tartu": "Estonia", "Tallinn": "Estonia", "Valparaiso": "Chile", "Santiago": "Chile",
}

JOBS = ("teacher tailor builder clerk driver miner writer judge banker lawyer plumber "
        "librarian baker dentist pilot gardener").split()
PET_SPECIES = "cat dog parrot rabbit hamster turtle canary ferret goat tortoise".split()
PET_NAMES = ("Pip Biscuit Luna Max Coco Pixel Daisy Bruno Olive Ziggy Nutmeg Waffles "
             "Pebble Socks Mango Rusty Bean Toffee Clover Gizmo Peanut Juniper Sprout Noodle "
             "Button Fudge Rolo Pickle Tinker Widget Bramble Cricket Dumpling Echo Figaro "
             "Gumbo Hazel Inky Jellybean Kiwi").split()

ZIPF_EXPONENT = 1.0
"""The k-th most common character (or destination city) is drawn with weight 1 / k**s."""


def zipf_weights(n: int, exponent: float = ZIPF_EXPONENT) -> list[float]:
    """Normalised Zipf weights for ranks 1..n."""
    raw = [1.0 / (k ** exponent) for k in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


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
    """The fixed facts of a StoryWorld and the Zipf frequencies of its entities."""

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
        for i, item in enumerate(_CHARACTERS):
            name, pronoun = item.split(":")
            chars[name] = Character(
                name=name, pronoun=pronoun, job=rng.choice(JOBS),
                pet_species=rng.choice(PET_SPECIES), pet_name=pets[i % len(pets)],
                city=rng.choice(cities),
            )
        return cls(seed=seed, characters=chars, city_country=dict(CITY_COUNTRY))

    @property
    def names(self) -> list[str]:
        """Character names, most common first."""
        return list(self.characters)

    @property
    def cities(self) -> list[str]:
        """City names, most common destination first."""
        return list(self.city_country)

    @property
    def countries(self) -> list[str]:
        """Country names, in order of first appearance in `cities`."""
        return list(dict.fromkeys(self.city_country.values()))

    def character_rank(self, name: str) -> int:
        """1 for the most common character, len(characters) for the rarest."""
        return self.names.index(name) + 1

    def draw_character(self, rng: random.Random, exclude: str | None = None) -> Character:
        """A character drawn by Zipf frequency (never `exclude`)."""
        names = [n for n in self.names if n != exclude]
        weights = zipf_weights(len(self.names))
        if exclude is not None:
            weights = [w for n, w in zip(self.names, weights, strict=True) if n != exclude]
        return self.characters[rng.choices(names, weights=weights)[0]]

    def draw_city(self, rng: random.Random) -> str:
        """A city drawn by Zipf frequency."""
        return rng.choices(self.cities, weights=zipf_weights(len(self.cities)))[0]

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
