"""StoryWorld's generator and world: determinism, factors, agreement, facts, Zipf frequencies."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from sae_course import storyworld as sw


def test_same_seed_same_text_and_labels():
    a, b = sw.generate_story(7), sw.generate_story(7)
    assert a.text == b.text and a.factors == b.factors
    assert [(s.start, s.end, s.labels) for s in a.spans] == [
        (s.start, s.end, s.labels) for s in b.spans]
    assert sw.sample_texts(30, seed=3) == sw.sample_texts(30, seed=3)
    assert sw.sample_texts(30, seed=3) != sw.sample_texts(30, seed=4)
    rng = random.Random(5)
    assert sw.generate_story(rng).text != sw.generate_story(rng).text  # an rng advances


def test_factors_can_be_fixed_and_bad_ones_are_named():
    s = sw.generate_story(1, topic="sailing", subtopic="fishing", sentiment="negative",
                          tense="past", hero="Mara")
    assert (s.factors["topic"], s.factors["subtopic"], s.factors["sentiment"],
            s.factors["tense"], s.factors["hero"]) == ("sailing", "fishing", "negative",
                                                       "past", "Mara")
    with pytest.raises(ValueError, match="topic"):
        sw.generate_story(1, topic="knitting")
    with pytest.raises(ValueError, match="baking"):
        sw.generate_story(1, topic="cooking", subtopic="fishing")
    with pytest.raises(TypeError, match="random.Random"):
        sw.generate_story("seed")


def test_hierarchy_of_topics_and_subtopics():
    assert len(sw.TOPICS) >= 6
    assert all(2 <= len(subs) <= 3 for subs in sw.SUBTOPICS_OF.values())
    for story in sw.generate_stories(300, seed=2):
        topic, sub = story.factors["topic"], story.factors["subtopic"]
        assert sub in sw.SUBTOPICS_OF[topic]
        for span in story.spans:
            if span.labels["topic_word"]:
                assert span.labels["topic_word"] == topic
                assert sw.TOPIC_OF_WORD[span.text.lower()] == topic
            if span.labels["subtopic_word"]:
                assert span.labels["subtopic_word"] == sub
                assert sw.SUBTOPIC_OF_WORD[span.text.lower()] == sub
    # Every subtopic word is a word of its parent topic, and no word is in two subtopics.
    for word, sub in sw.SUBTOPIC_OF_WORD.items():
        assert sw.TOPIC_OF_WORD[word] == sw.SUBTOPIC_DATA[sub].topic


def test_vocabulary_clash_is_refused():
    with pytest.raises(AssertionError, match="soup"):
        sw.check_vocabulary({"soup"})


def test_vocabulary_is_modest():
    words = {w.lower() for t in sw.sample_texts(2000, seed=11) for w in re.findall(r"[A-Za-z]+", t)}
    assert 500 <= len(words) <= 2000, len(words)


def test_spans_cover_the_text_exactly():
    for story in sw.generate_stories(200, seed=2):
        for span in story.spans:
            assert story.text[span.start:span.end] == span.text
        covered = {i for s in story.spans for i in range(s.start, s.end)}
        assert all(story.text[i] == " " for i in range(len(story.text)) if i not in covered)
        for span in story.spans:
            for key in ("topic", "subtopic", "sentiment", "tense"):
                assert span.labels[key] == story.factors[key]


def test_sentiment_pays_off_throughout_the_story():
    stories = sw.generate_stories(1000, seed=14)
    per_story = [sum(1 for s in st.spans if s.labels["sentiment_word"]) for st in stories]
    assert sum(per_story) / len(per_story) >= 4.5  # many slots whose polarity follows the story
    for st in stories:
        for span in st.spans:
            if span.labels["sentiment_word"]:
                assert sw.SENTIMENT_OF_WORD[span.text.lower()] == st.factors["sentiment"]


def test_sentiment_is_skewed_by_topic_as_documented():
    stories = sw.generate_stories(4000, seed=15)
    for topic in ("music", "medicine"):
        mine = [s for s in stories if s.factors["topic"] == topic]
        share = sum(s.factors["sentiment"] == "positive" for s in mine) / len(mine)
        assert abs(share - sw.SENTIMENT_BIAS[topic]) < 0.08, (topic, share)
    assert sw.SENTIMENT_BIAS["music"] - sw.SENTIMENT_BIAS["medicine"] >= 0.5


def test_characters_and_cities_follow_a_zipf_law():
    world = sw.WORLD
    assert len(world.characters) >= 100 and len(world.city_country) > 24
    heroes = Counter(s.factors["hero"] for s in sw.generate_stories(6000, seed=16))
    top, tenth = heroes[world.names[0]], heroes[world.names[9]]
    assert 6 < top / tenth < 15  # 1/rank: the first is about ten times the tenth
    rare = sum(heroes[n] for n in world.names[-60:])
    assert rare / 6000 < 0.15 and len(heroes) >= 110  # a long, thin tail
    assert abs(sum(sw.zipf_weights(10)) - 1) < 1e-9


def test_world_facts_are_stable_across_stories():
    world = sw.WORLD
    seen = Counter()
    for story in sw.generate_stories(1500, seed=9):
        for fact in sw.fact_consistency(story.text):
            assert fact.true, (fact, story.text)
            seen[fact.relation] += 1
    assert min(seen[r] for r in ("job", "lives_in", "pet_species", "pet_name", "is_in")) > 200
    assert sw.World.from_seed(0) == sw.WORLD
    assert sw.World.from_seed(1).characters != world.characters


def test_agreement_and_tense_in_the_labels():
    checked = 0
    for story in sw.generate_stories(300, seed=12):
        for span in story.spans:
            lab = span.labels
            word = span.text.lower()
            if lab["pos"] == "verb":
                tense = lab["verb_tense"]
                assert tense == (story.factors["tense"] if not lab["in_quote"] else "present")
                if lab["lemma"] == "be":
                    expected = {("present", False): "is", ("present", True): "are",
                                ("past", False): "was", ("past", True): "were"}
                    assert word == expected[tense, lab["plural"]]
                elif tense == "present":
                    third = {"have": "has"}.get(lab["lemma"]) or sw.third_person(lab["lemma"])
                    assert word == (lab["lemma"] if lab["plural"] else third)
                checked += 1
            if lab["pos"] == "pron" and lab["entity"]:
                assert word == sw.WORLD.characters[lab["entity"]].pronoun
    assert checked > 1000
