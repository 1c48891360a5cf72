"""StoryWorld's scorers: topic, subtopic, sentiment, tense, well-formed sentences and facts."""

from __future__ import annotations

from sae_course import storyworld as sw


def test_scorers_recover_every_generated_story_factor():
    stories = sw.generate_stories(400, seed=41)
    for key, scorer in (("topic", sw.classify_topic), ("subtopic", sw.classify_subtopic),
                        ("tense", sw.classify_tense), ("sentiment", sw.classify_sentiment)):
        hits = sum(scorer(s.text) == s.factors[key] for s in stories)
        assert hits / len(stories) >= 0.97, (key, hits)


def test_scorers_on_hand_written_text():
    assert sw.classify_topic("The sailor hoisted the sail in the harbour.") == "sailing"
    assert sw.classify_topic("Nothing here.") is None
    assert sw.classify_subtopic("The chef kneads the dough and bakes a cake.") == "baking"
    assert sw.classify_subtopic("She boils the soup.", topic="cooking") == "soups"
    assert sw.sentiment_score("a wonderful, lovely day") == 2
    assert sw.classify_sentiment("an awful day") == "negative"
    assert sw.classify_sentiment("a day") is None
    assert sw.classify_tense('Mara baked a cake. "We love the cakes," said Mara.') == "past"
    assert sw.classify_tense("Mara bakes a cake. The cake is sweet.") == "present"
    story = sw.generate_story(3)
    prompt = sw.topic_prompt(story)
    assert story.text.startswith(prompt) and sw.topic_counts(prompt)[story.factors["topic"]] >= 2


def test_every_generated_sentence_is_well_formed():
    for story in sw.generate_stories(300, seed=42):
        bad = [s for s, ok in sw.sentence_validity(story.text) if not ok]
        assert not bad, bad
        assert sw.grammatical_fraction(story.text) == 1.0


def test_broken_sentences_are_not_well_formed():
    good = "The chef bakes the cake."
    assert sw.grammatical_fraction(good) == 1.0
    broken = [
        "The chef bake the cake.",  # number agreement
        "The chefs bakes the cake.",
        "The chef bakes an cake.",  # article
        "The chef the cake bakes.",  # word order
        "She counts three cakes: one, two, four.",  # counting
        "The chef bakes the cake",  # unfinished
        "The chef bakes the zeppelin.",  # not a word of the language
        "Mara is a banana.",  # not a job
        "bakes.",
    ]
    for sentence in broken:
        assert sw.grammatical_fraction(sentence) == 0.0, sentence
    assert sw.grammatical_fraction(good + " " + broken[0]) == 0.5
    assert sw.grammatical_fraction("") == 0.0
    ok = ['"We love the cakes," said Mara.', 'Mara says, "The soup is salty."',
          "She counts three cakes: one, two, three.", "Lyon is in France.",
          "Mara and Tom travelled to Oslo, in Norway."]
    for sentence in ok:
        assert sw.grammatical_fraction(sentence) == 1.0, sentence


def test_fact_consistency_checks_against_the_world():
    mara = sw.WORLD.characters["Mara"]
    wrong_city = next(c for c in sw.WORLD.cities if c != mara.city)
    text = (f"Mara is a {mara.job}. Mara lives in {wrong_city}. Lyon is in France. "
            "Oslo is in Peru.")
    facts = {(f.subject, f.relation): f.true for f in sw.fact_consistency(text)}
    assert facts == {("Mara", "job"): True, ("Mara", "lives_in"): False,
                     ("Lyon", "is_in"): True, ("Oslo", "is_in"): False}
