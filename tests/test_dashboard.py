"""The feature dashboard (sae_course.dashboard) on the shipped main SAE, driven through its
controls as a learner drives them in Jupyter."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch

from sae_course import dashboard as D
from sae_course.activations import harvest
from sae_course.features import latent_activations, logit_lens
from sae_course.models import load_offline
from sae_course.pretrained import load_pretrained
from sae_course.sae import SAE, SAEConfig
from sae_course.scorecard import counted_features, label_scores
from sae_course.storyworld import FEATURES, labelled_contexts
from sae_course.text import bos_id_of, tokenize_texts

MAIN = "blocks.2.hook_resid_pre/topk-1536-k16"


@pytest.fixture(scope="module")
def model():
    return load_offline()


@pytest.fixture(scope="module")
def sae():
    return load_pretrained("storyworld-res", MAIN)


@pytest.fixture(scope="module")
def ctx(model):
    return labelled_contexts(model.tokenizer, 64, seed=1)


@pytest.fixture(scope="module")
def acts(model, sae, ctx):
    return latent_activations(model, sae, ctx, progress=False)


@pytest.fixture(scope="module")
def scores(acts, ctx):
    return label_scores(acts, counted_features(ctx, FEATURES), FEATURES)


@pytest.fixture
def dash(model, sae, acts, ctx, scores):
    return D.feature_dashboard(model, sae, acts, ctx, scores)


def live_latent(acts, rank: int = 0) -> int:
    """A latent that fires, the `rank`-th by firing count."""
    return int(torch.argsort(acts.firing_counts(), descending=True)[rank])


def test_first_view_draws_every_panel(dash, acts):
    assert dash.latent is not None and acts.firing_counts()[dash.latent] > 0
    assert f"Latent {dash.latent}</b>" in dash.status.value
    assert len(dash.plots.outputs) == 1 and "image/png" in dash.plots.outputs[0]["data"]
    for panel in (dash.lens_html, dash.truth_html, dash.top_html, dash.quantile_html):
        assert panel.value
    assert "neuronpedia" not in dash.status.value  # the offline model's SAE has no page


def test_pick_by_index_redraws_in_place(dash, model, sae, acts, scores):
    figures = set(plt.get_fignums())
    for rank in (0, 5, 40):
        latent = live_latent(acts, rank)
        dash.index_box.value = latent
        assert dash.latent == latent
        assert f"Latent {latent}</b>" in dash.status.value
        assert len(dash.plots.outputs) == 1  # replaced, never appended
        assert set(plt.get_fignums()) == figures  # every figure closed after drawing
        lens = logit_lens(sae, model, latent, k=D.N_LENS)
        assert D._token(lens.top_tokens[0]) in dash.lens_html.value
        best = scores.names[int(scores.f1[latent].argmax())]
        assert best in dash.truth_html.value
        assert dash.top_html.value.count("<tr>") == min(D.N_TOP, int(acts.firing_counts()[latent]))
        assert "band 4 of 4" in dash.quantile_html.value
        assert "✓" in dash.top_html.value or "✗" in dash.top_html.value


def test_pick_by_label_shows_its_best_latent(dash, scores):
    j = int(scores.f1.max(dim=0).values.argmax())
    label = scores.names[j]
    dash.label_box.value = label
    assert dash.latent == int(scores.f1[:, j].argmax())
    assert dash.index_box.value == dash.latent
    assert "best single latent" in dash.status.value and label in dash.status.value
    dash.index_box.value = live_latent(dash.acts, 3)  # another route clears the stale label
    assert dash.label_box.value == D.NO_LABEL


def test_pick_by_token_finds_the_latent_ranking_it_highest(dash, model, sae, acts):
    latent = live_latent(acts, 2)
    token_text = logit_lens(sae, model, latent, k=1).top_tokens[0]
    dash.token_box.value = token_text
    found = dash.latent
    assert found is not None and "ranks" in dash.status.value
    # brute force: the rank of the token in every live latent's logit lens
    ids = D.token_ids_for(model.tokenizer, token_text)
    logits = sae.W_dec.detach() @ model.W_U.detach()
    live = acts.firing_counts() > 0
    best_rank = min(int((logits[live] > logits[live][:, t:t + 1]).sum(1).min()) for t in ids)
    ranks = [int((logits[found] > logits[found, t]).sum()) for t in ids]
    assert min(ranks) == best_rank == 0  # `latent` itself ranks it first, so the best is 0
    assert bool(live[found])


def test_token_search_shortlist_agrees_on_a_clear_winner(monkeypatch):
    g = torch.Generator().manual_seed(0)
    W_dec, W_U = torch.randn(300, 16, generator=g), torch.randn(16, 50, generator=g)
    W_dec[123] = W_U[:, 7] * 10  # writes token 7 far more than anything else
    exact = D.latent_for_token(W_dec, W_U, 7)
    monkeypatch.setattr(D, "EXACT_SEARCH_MAX", 1000)  # forces the shortlist and chunks
    monkeypatch.setattr(D, "SHORTLIST", 20)
    assert D.latent_for_token(W_dec, W_U, 7)[:2] == exact[:2] == (123, 0)


def test_unknown_token_gets_a_message(dash):
    before = dash.latent
    dash.token_box.value = "zzqx zzqx"
    assert dash.latent == before
    assert "not one token" in dash.status.value


def test_own_text_shows_the_latents_activation_on_each_token(dash, model, sae, acts):
    latent = live_latent(acts, 0)
    dash.index_box.value = latent
    text = 'The cook said, "I bake bread in the morning."'
    dash.own_text.value = text
    dash.own_button.click()
    ids = tokenize_texts([text], model.tokenizer)[0]
    tokens = torch.tensor([[bos_id_of(model.tokenizer)] + ids])
    expected = sae.encode(harvest(model, tokens, sae.cfg.extra["hook_name"]))[0, 1:].detach()
    shown = dash.run_text(text)
    torch.testing.assert_close(shown, expected[:, latent])
    assert f"Latent {latent} " in dash.own_html.value
    assert dash.own_html.value.count("<span style=\"background") == len(ids)  # BOS not shown
    other = live_latent(acts, 7)
    dash.index_box.value = other  # the text stays; the panel follows the latent
    assert f"Latent {other} " in dash.own_html.value
    dash.run_text("   ")
    assert "Type some text" in dash.own_html.value


def test_dead_latent_gets_a_message_not_empty_panels(dash, acts):
    dead = (acts.firing_counts() == 0).nonzero()
    if not len(dead):
        pytest.skip("the main SAE has no dead latent on these contexts")
    dash.index_box.value = int(dead[0])
    assert "is dead here" in dash.status.value
    assert dash.plots.outputs == () and dash.top_html.value == "" == dash.quantile_html.value
    assert dash.lens_html.value  # what it would write is still known


@pytest.mark.parametrize("bad", [-1, 1536, 10**6])
def test_invalid_index_gets_a_message_never_a_traceback(dash, acts, bad):
    dash.index_box.value = bad
    assert dash.latent is None and "There is no latent" in dash.status.value
    assert "0 to 1535" in dash.status.value
    assert dash.plots.outputs == () and dash.top_html.value == ""
    dash.show(live_latent(acts))
    assert dash.latent == live_latent(acts) and len(dash.plots.outputs) == 1


def test_without_scores_the_label_picker_is_off(model, sae, acts, ctx):
    dash = D.feature_dashboard(model, sae, acts)
    assert dash.label_box.disabled
    assert "pass scores" in dash.truth_html.value
    assert "✓" not in dash.top_html.value and "✗" not in dash.top_html.value


def test_mismatched_inputs_are_refused(model, sae, acts, ctx):
    other = SAE(SAEConfig(d_in=sae.cfg.d_in, d_sae=32, architecture="topk", k=4))
    with pytest.raises(ValueError, match="acts cover 1536 latents"):
        D.FeatureDashboard(model, other, acts)


def gpt2_tagged(d_in: int, **extra) -> SAE:
    sae = SAE(SAEConfig(d_in=d_in, d_sae=64, architecture="topk", k=4), seed=0)
    sae.cfg.extra.update(extra)
    return sae.requires_grad_(False)


def test_neuronpedia_link_only_for_gpt2_small_res_jb(model, ctx):
    d = model.cfg.d_model
    jb = gpt2_tagged(d, model_name="gpt2", release="gpt2-small-res-jb",
                     hook_name="blocks.8.hook_resid_pre")
    assert D.neuronpedia_url(jb, 5) == "https://www.neuronpedia.org/gpt2-small/8-res-jb/5"
    assert D.neuronpedia_url(gpt2_tagged(d, model_name="gpt2", release="mine",
                                         hook_name="blocks.8.hook_resid_pre"), 5) is None
    assert D.neuronpedia_url(gpt2_tagged(d, model_name="gpt2",  # not jb's width
                                         hook_name="blocks.8.hook_resid_pre"), 5) is None
    assert D.neuronpedia_url(gpt2_tagged(d, model_name="offline",
                                         hook_name="blocks.2.hook_resid_pre"), 5) is None
    acts = latent_activations(model, jb, ctx.tokens[:4], hook_name="blocks.1.hook_resid_pre",
                              progress=False)
    dash = D.feature_dashboard(model, jb, acts)
    latent = dash.latent
    assert f"https://www.neuronpedia.org/gpt2-small/8-res-jb/{latent}" in dash.status.value
    dash.index_box.value = (latent + 1) % 64
    assert f"8-res-jb/{(latent + 1) % 64}'" in dash.status.value


def test_shown_once_per_cell(monkeypatch, model, sae, acts):
    shown = []
    count = {"n": 5}
    monkeypatch.setattr(D, "display", lambda w: shown.append(w))
    monkeypatch.setattr(D, "_execution_count", lambda: count["n"])
    dash = D.feature_dashboard(model, sae, acts)  # e.g. `dash = feature_dashboard(...)`
    assert shown == [dash.widget]
    dash._ipython_display_()  # `feature_dashboard(...)` left last in the same cell
    assert len(shown) == 1
    count["n"] = 6  # `dash` alone in a later cell shows it again
    dash._ipython_display_()
    assert len(shown) == 2
