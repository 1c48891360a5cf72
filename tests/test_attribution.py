"""Attribution through an error-mode splice, checked against finite differences and against
ablating each latent, and the city edit built from it, on the offline model and the main SAE.

The margins sit below what was measured (see each test) so that a change of threads or
platform does not flip them, and far above what a broken attribution would give."""

from __future__ import annotations

import pytest
import torch

from sae_course import attribution as at
from sae_course.models import load_offline
from sae_course.pretrained import load_pretrained
from sae_course.settings import cpu_threads
from sae_course.splice import Splice
from sae_course.storyworld.world import WORLD

HOOK = "blocks.2.hook_resid_pre"
MAIN_SAE = "blocks.2.hook_resid_pre/topk-1536-k16"
NAMES = ["Mara", "Tom", "Lena", "Omar"]
EDITS = [("Mara", "Hanoi"), ("Tom", "Mombasa"), ("Lena", "Naples"), ("Omar", "Reykjavik")]


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


@pytest.fixture(scope="module")
def model():
    return load_offline()


@pytest.fixture(scope="module")
def sae():
    return load_pretrained("storyworld-res", MAIN_SAE)


def home(model, name):
    prompts = at.fact_prompts(WORLD, name, "home")
    return prompts, at.home_metrics(model, WORLD, at.fact_answer(WORLD, name, "home"), prompts)


def test_fact_prompts_follow_the_world():
    c = WORLD.characters["Mara"]
    assert at.fact_prompts(WORLD, "Mara", "home")[0] == "Mara lives in"
    assert f"{c.job}. Mara lives in" in at.fact_prompts(WORLD, "Mara", "home")[2]
    assert at.fact_prompts(WORLD, "Mara", "job") == ["Mara is a", "Mara was a"]
    assert at.fact_answer(WORLD, "Mara", "pet") == c.pet_species
    assert at.candidates(WORLD, "home") == WORLD.cities


def test_error_mode_splice_leaves_the_logits_unchanged(model, sae):
    tokens = model.to_tokens("Mara lives in")
    clean = model(tokens)
    splice = Splice(model, sae, HOOK, mode="error")
    with model.hooks(fwd_hooks=splice.fwd_hooks):
        spliced = model(tokens)
    assert (spliced - clean).abs().max() < 1e-4  # measured 3e-6
    assert splice.latents is not None and splice.latents.requires_grad


def test_attribution_is_the_first_order_effect(model, sae):
    """Scaling latent i by (1 - eps) changes M by eps * attribution_i, to first order."""
    prompts, metrics = home(model, "Mara")
    attr = at.attribute(model, sae, prompts[0], metrics[0])
    clean = at.metric_value(model, prompts[0], metrics[0])
    assert attr.metric == pytest.approx(clean, abs=1e-3)
    eps = 1e-2
    for i in attr.top(3).tolist():
        def shrink(z, i=i):
            z[..., i] = z[..., i] * (1 - eps)
            return z

        splice = Splice(model, sae, HOOK, mode="error", edit=shrink)
        drop = clean - at.metric_value(model, prompts[0], metrics[0], [splice])
        assert drop == pytest.approx(eps * float(attr.scores[i]), rel=0.05, abs=2e-4)
    off = int((attr.activations == 0).nonzero()[0])  # a latent that never fires here
    assert attr.scores[off] == 0
    assert abs(at.ablation_effects(model, sae, prompts[0], metrics[0], [off])[0]) < 1e-4


def test_attribution_tracks_the_ablation_effect_on_the_city_fact(model, sae):
    """Measured (top 20 latents, 4 home prompts each): Pearson 0.96, 0.83, 0.92, 0.93 and
    Spearman 0.86, 0.82, 0.94, 0.99 for Mara, Tom, Lena, Omar."""
    pearson, spearman = [], []
    for name in NAMES:
        prompts, metrics = home(model, name)
        check = at.check_attribution(model, sae, prompts, metrics, n=20)
        assert len(check.latents) == 20
        assert check.ablation[0] > 0 and check.attribution[0] > 0  # the top latent helps
        pearson.append(check.pearson)
        spearman.append(check.spearman)
    assert min(pearson) > 0.6 and sum(pearson) / len(pearson) > 0.75
    assert min(spearman) > 0.5 and sum(spearman) / len(spearman) > 0.7


def test_city_edit_causes_the_new_city_and_keeps_job_and_species(model, sae):
    """Measured at k=4 on these 4 pairs: cause 1.0, isolation (job and pet species) 1.0, pet
    name kept 0.25 (the borrowed latents carry a donor's identity: the pet's name and the next
    sentence's subject become the donor's); 1.0 for all three before the edit. On the first 8
    characters (each sent to the next one's city): cause 1.0, isolation 0.81, pet name 0.12."""
    report = at.edit_report(model, sae, WORLD, EDITS, k=4)
    assert report["cause_before"] == 1 and report["isolation_before"] == 1
    assert report["pet_name_kept_before"] == 1
    assert report["cause"] >= 0.75
    assert report["isolation"] >= 0.6
    assert report["pet_name_kept"] <= 0.5  # the edit is not isolated at the pet's name


def test_city_edit_zeroes_and_clamps_different_latents(model, sae):
    edit = at.city_edit(model, sae, WORLD, "Tom", "Mombasa", k=4)
    assert len(edit.added) == 4 and not torch.isin(edit.removed, edit.added).any()
    assert (edit.values > 0).all()


@pytest.mark.parametrize("call, message", [
    (lambda m, s: at.fact_prompts(WORLD, "Mara", "age"), "Unknown relation"),
    (lambda m, s: at.fact_prompts(WORLD, "Nobody", "home"), "No character"),
    (lambda m, s: at.answer_metric(m, "Mara lives", WORLD.cities), "one-token answer"),
    (lambda m, s: at.attribute(m, s, [], lambda x: x.sum()), "No prompts"),
    (lambda m, s: at.attribute(m, s, torch.zeros(1, 3), lambda x: x.sum()), "token ids"),
    (lambda m, s: at.attribute(m, s, "Mara lives in", lambda x: x[0, -1]), "one number"),
    (lambda m, s: at.attribute(m, s, ["a", "b"], [lambda x: x.sum()]), "1 metrics for 2"),
    (lambda m, s: at.check_attribution(m, s, "Mara lives in", lambda x: x.sum(), n=2),
     "at least 3"),
    (lambda m, s: at.city_edit(m, s, WORLD, "Mara", at.fact_answer(WORLD, "Mara", "home")),
     "already lives"),
    (lambda m, s: at.city_edit(m, s, WORLD, "Mara", "Atlantis"), "Unknown city"),
    (lambda m, s: at.correlation(torch.ones(2), torch.ones(2)), "length >= 3"),
])
def test_bad_input_gets_one_clear_error(model, sae, call, message):
    with pytest.raises(ValueError, match=message):
        call(model, sae)
