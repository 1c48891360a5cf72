"""Linear probes: fitting, held-out accuracy, and the story-factor table."""

from __future__ import annotations

import pytest
import torch

from sae_course import probing
from sae_course import storyworld as sw


def test_probe_learns_a_linear_rule_and_not_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 8, generator=g)
    y = (x[:, 2] - 0.5 * x[:, 5] > 0).long()
    probe = probing.fit_probe(x[:400], y[:400])
    assert probe.accuracy(x[400:], y[400:]) > 0.95
    noise = torch.randint(0, 3, (600,), generator=g)
    assert probing.fit_probe(x[:400], noise[:400], 3).accuracy(x[400:], noise[400:]) < 0.5
    with pytest.raises(ValueError, match=r"x \[n, d\]"):
        probing.fit_probe(x, y[:10])


@pytest.fixture(scope="module")
def contexts():
    from transformers import AutoTokenizer

    return sw.labelled_contexts(AutoTokenizer.from_pretrained(str(sw.MODEL_DIR)), 120,
                                context_len=64, seed=3)


def test_story_factor_probes_find_what_is_written_in(contexts):
    """A fake residual stream: layer 1 holds the topic's id in one dimension, layer 0 noise."""
    g = torch.Generator().manual_seed(1)
    n, t = contexts.tokens.shape
    resid = torch.randn(2, n, t, len(sw.TOPICS) + 2, generator=g)
    topic = torch.tensor([[sw.TOPICS.index(lab["topic"]) if lab["topic"] else 0 for lab in row]
                          for row in contexts.labels], dtype=torch.float)
    resid[1, :, :, :len(sw.TOPICS)] = torch.nn.functional.one_hot(topic.long(), len(sw.TOPICS))
    results = probing.probe_story_factors(resid, ["noise", "topic"], contexts,
                                          ["topic", "tense"], progress=False)
    acc = {(r.factor, r.layer): r for r in results}
    assert acc["topic", "topic"].accuracy > 0.97
    assert acc["topic", "noise"].accuracy < acc["topic", "noise"].chance + 0.25
    assert acc["tense", "topic"].accuracy < 0.8
    table = probing.format_probe_table(results)
    assert "| topic |" in table and "`noise`" in table
    with pytest.raises(ValueError, match="resid must be"):
        probing.probe_story_factors(resid[:, :3], ["a", "b"], contexts)
