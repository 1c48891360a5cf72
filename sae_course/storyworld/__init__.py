"""StoryWorld: a small synthetic English-like language whose generating factors are known.

Every story is built word by word from a few latent factors, and every word of the text
carries its ground-truth labels, so an SAE trained on a model of this language can be checked
against the truth and a steering intervention can be scored by what it really changed.

The package, one module per idea:
- `vocabulary`: the words; topics > subtopics > words, sentiment words, the one correlation;
- `world`: characters and places, their fixed facts, their Zipf frequencies;
- `grammar`: how a story is written, with its labels (`generate_story`, `sample_texts`);
- `labels`: labels aligned with tokens (`labelled_tokens`, `feature_matrix`, `HIERARCHY`);
- `contexts`: packed BOS-led contexts with their per-token labels (`labelled_contexts`);
- `scorers`: scoring any text without an LLM (topic, subtopic, sentiment, tense,
  well-formed sentences, fact consistency);
- `behaviour`: does a model behave as if it tracked each factor (the model card's table)?

Story-level factors: `topic`, `subtopic`, `sentiment`, `tense` (and `hero`, `city`, ...).
Word-level labels: see `DEFAULT_LABELS`.

`import sae_course.storyworld as sw` gives every public name of these modules.
"""

from pathlib import Path

from sae_course.storyworld.contexts import LabelledContexts, labelled_contexts
from sae_course.storyworld.grammar import (
    DEFAULT_LABELS,
    POS_TAGS,
    Span,
    Story,
    article,
    generate_stories,
    generate_story,
    sample_texts,
)
from sae_course.storyworld.labels import (
    BOS_TOKEN,
    FEATURES,
    HIERARCHY,
    SPECIAL_LABELS,
    STORY_FACTOR_VALUES,
    STORY_FACTORS,
    bos_id,
    feature_matrix,
    labelled_tokens,
)
from sae_course.storyworld.scorers import (
    classify_sentiment,
    classify_subtopic,
    classify_tense,
    classify_topic,
    fact_consistency,
    grammatical_fraction,
    sentence_validity,
    sentiment_score,
    subtopic_counts,
    tense_counts,
    topic_counts,
    topic_prompt,
)
from sae_course.storyworld.vocabulary import (
    FUNCTION_WORDS,
    INTERJECTIONS,
    NEGATIVE_ADJS,
    NUMBER_WORDS,
    POSITIVE_ADJS,
    SENTIMENT_ADJS,
    SENTIMENT_ADVERBS,
    SENTIMENT_BIAS,
    SENTIMENT_OF_WORD,
    SENTIMENT_VERBS,
    SENTIMENTS,
    SUBTOPIC_DATA,
    SUBTOPIC_OF_WORD,
    SUBTOPICS,
    SUBTOPICS_OF,
    TENSES,
    TOPIC_DATA,
    TOPIC_OF_WORD,
    TOPICS,
    check_vocabulary,
    third_person,
)
from sae_course.storyworld.world import (
    CITY_COUNTRY,
    ENTITY_TYPES,
    JOBS,
    PET_NAMES,
    PET_SPECIES,
    WORLD,
    ZIPF_EXPONENT,
    Character,
    World,
    zipf_weights,
)

MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "storyworld_model"
"""The folder of the shipped offline model (config, safetensors weights, tokenizer, card)."""

check_vocabulary(set(JOBS) | set(PET_SPECIES) | {n.lower() for n in WORLD.names}
                 | {c.lower() for c in CITY_COUNTRY} | {p.lower() for p in PET_NAMES})

__all__ = [
    "BOS_TOKEN",
    "CITY_COUNTRY",
    "Character",
    "DEFAULT_LABELS",
    "ENTITY_TYPES",
    "FEATURES",
    "FUNCTION_WORDS",
    "HIERARCHY",
    "INTERJECTIONS",
    "JOBS",
    "LabelledContexts",
    "MODEL_DIR",
    "NEGATIVE_ADJS",
    "NUMBER_WORDS",
    "PET_NAMES",
    "PET_SPECIES",
    "POSITIVE_ADJS",
    "POS_TAGS",
    "SENTIMENTS",
    "SENTIMENT_ADJS",
    "SENTIMENT_ADVERBS",
    "SENTIMENT_BIAS",
    "SENTIMENT_OF_WORD",
    "SENTIMENT_VERBS",
    "SPECIAL_LABELS",
    "STORY_FACTORS",
    "STORY_FACTOR_VALUES",
    "SUBTOPICS",
    "SUBTOPICS_OF",
    "SUBTOPIC_DATA",
    "SUBTOPIC_OF_WORD",
    "Span",
    "Story",
    "TENSES",
    "TOPICS",
    "TOPIC_DATA",
    "TOPIC_OF_WORD",
    "WORLD",
    "World",
    "ZIPF_EXPONENT",
    "article",
    "bos_id",
    "check_vocabulary",
    "classify_sentiment",
    "classify_subtopic",
    "classify_tense",
    "classify_topic",
    "fact_consistency",
    "feature_matrix",
    "generate_stories",
    "generate_story",
    "grammatical_fraction",
    "labelled_contexts",
    "labelled_tokens",
    "sample_texts",
    "sentence_validity",
    "sentiment_score",
    "subtopic_counts",
    "tense_counts",
    "third_person",
    "topic_counts",
    "topic_prompt",
    "zipf_weights",
]
