"""The steering playground (sae_course.playground) on the offline model and the shipped main
SAE, driven through its controls as a learner drives them in Jupyter."""

from __future__ import annotations

import pytest
import torch

from sae_course import playground as P
from sae_course import steering as st
from sae_course.models import load_model
from sae_course.pretrained import load_pretrained
from sae_course.scorecard import LabelScores
from sae_course.settings import cpu_threads

MAIN = "blocks.2.hook_resid_pre/topk-1536-k16"
N_TOKENS = 8
LATENT = 315  # a latent of the shipped SAE whose decoder row visibly changes the text


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


@pytest.fixture(scope="module")
def model():
    return load_model("offline", device="cpu")


@pytest.fixture(scope="module")
def sae():
    return load_pretrained("storyworld-res", MAIN)


@pytest.fixture(scope="module")
def cost_tokens(model):
    return P.cost_batch(model, n_contexts=2, context_len=32)


@pytest.fixture(scope="module")
def direction(model):
    v = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(3))
    return 10 * v / v.norm()


@pytest.fixture
def play(model, sae, cost_tokens, direction):
    return P.SteeringPlayground(model, sae, scores={"topic_word=space": LATENT, "quote": 7},
                                directions={"my direction": direction}, cost_tokens=cost_tokens,
                                latent=LATENT, n_tokens=N_TOKENS)


def n_hooks(model) -> int:
    return sum(len(hp.fwd_hooks) + len(hp.bwd_hooks) for hp in model.hook_points())


def test_clicking_generate_fills_both_columns(play):
    assert play.output.value == "" and play.last_run is None
    play.button.click()
    run = play.last_run
    assert run is not None and run.latent == LATENT and run.n_tokens == N_TOKENS
    assert run.unsteered.text.strip() and run.steered.text.strip()
    out = play.output.value
    assert "unsteered" in out and f"W_dec[{LATENT}]" in out
    for concept in st.SCORERS:  # a verdict row per scorer, and the measures
        assert f">{concept}</td>" in out
    for row in ("repetition", "well-formed", "cost", "KL"):
        assert row in out
    assert P.html.escape(run.unsteered.text) in out and P.html.escape(run.steered.text) in out
    n_targets = play.cost_tokens[:, 1:].numel()  # BOS separators inside a context predict none
    assert 0.9 * n_targets < run.cost.n_predictions <= n_targets
    assert "Done in" in play.status.value
    assert run.unsteered.verdicts == {c: f(run.unsteered.text) for c, f in st.SCORERS.items()}
    assert run.steered.repetition == st.repetition_rate(run.steered.text)


def test_a_big_alpha_changes_the_steered_text_but_not_the_unsteered(play):
    play.alpha_box.value = 0.0
    calm = play.generate()
    assert calm.steered.text == calm.unsteered.text
    assert calm.cost.ce_increase == pytest.approx(0.0, abs=1e-5)
    play.alpha_box.value = 25.0
    strong = play.generate()
    assert strong.unsteered.text == calm.unsteered.text
    assert strong.steered.text != strong.unsteered.text
    assert strong.cost.kl > 0.1 and strong.cost.ce_increase > calm.cost.ce_increase


def test_every_method_runs_and_keeps_its_own_alpha(play):
    steered = {}
    for method in play.methods:
        play.method_box.value = method
        low, high = play.ranges[method]
        assert (play.alpha_box.min, play.alpha_box.max) == (low, high)
        play.alpha_box.value = high * 0.8
        run = play.generate()
        assert run is not None and run.method == method, play.status.value
        assert run.cost.kl > 0
        steered[method] = run.steered.text
    assert run.latent is not None  # the random direction takes its latent's norm
    play.method_box.value = "my direction"
    assert play.generate().latent is None
    play.method_box.value = P.ADD
    assert play.alpha_box.value == pytest.approx(play.ranges[P.ADD][1] * 0.8, abs=0.2)
    assert steered[P.ADD] != steered[P.RANDOM]
    play.method_box.value = P.CLAMP
    assert "SAE's error term kept" in play.plan.value


def test_it_can_start_on_any_method(model, sae, cost_tokens, direction):
    play = P.SteeringPlayground(model, sae, directions={"my direction": direction},
                                cost_tokens=cost_tokens, method="my direction", alpha=3.0)
    assert play.method_box.value == "my direction" and play.alpha_box.value == 3.0
    assert (play.alpha_box.min, play.alpha_box.max) == play.ranges["my direction"]
    assert "the direction <i>my direction</i>" in play.plan.value


def test_the_plan_says_what_the_next_click_does(play):
    play.alpha_box.value = 5.0
    assert "W_dec[315]" in play.plan.value and "5.00" in play.plan.value
    play.generate()
    assert "Settings changed" not in play.plan.value
    play.alpha_box.value = 6.0
    assert "6.00" in play.plan.value and "Settings changed" in play.plan.value
    play.method_box.value = P.CLAMP
    assert "latent 315 is set to" in play.plan.value


def test_picking_a_label_sets_its_latent(play, model, sae, cost_tokens):
    play.label_box.value = "quote"
    assert play.index_box.value == 7 and "best single latent for <b>quote" in play.plan.value
    play.index_box.value = 9  # typing an index clears the label
    assert play.label_box.value == P.NO_LABEL
    f1 = torch.zeros(sae.cfg.d_sae, 2)
    f1[42, 0], f1[99, 1] = 0.9, 0.6
    scores = LabelScores(["topic_word=space", "special"], f1, f1, f1, torch.ones(2))
    scored = P.SteeringPlayground(model, sae, scores, cost_tokens=cost_tokens)
    assert scored.index_box.value == 42  # the best match of any label first
    scored.label_box.value = "special"
    assert scored.index_box.value == 99 and "F1 0.60" in scored.plan.value
    assert P.SteeringPlayground(model, sae, scores, cost_tokens=cost_tokens,
                                label="special").index_box.value == 99
    assert P.SteeringPlayground(model, sae, cost_tokens=cost_tokens).label_box.disabled


def test_bad_inputs_give_messages_not_tracebacks(play):
    good = play.generate()
    shown = play.output.value
    cases = [
        ("index_box", 5000, "There is no latent 5000: this SAE has latents 0 to 1535"),
        ("alpha_box", float("nan"), "not a number"),
        ("prompt_box", "   ", "Type a prompt first"),
        ("seed_box", "abc", "The seed must be a whole number"),
        ("prompt_box", "Mara was a cook. " * 40, "more than the model's context of 128"),
    ]
    for name, value, message in cases:
        box = getattr(play, name)
        old, box.value = box.value, value
        assert play.generate() is None, name
        assert message in play.status.value
        assert play.output.value == shown and play.last_run is good  # nothing redrawn
        box.value = old
    play.index_box.value = 5000
    assert "There is no latent 5000" in play.plan.value
    play.method_box.value = "my direction"  # a method that needs no latent
    assert play.generate() is not None


def test_no_hooks_are_left_after_any_click(play, model, monkeypatch):
    start = n_hooks(model)
    play.generate()
    assert n_hooks(model) == start
    play.index_box.value = -1
    play.generate()
    assert n_hooks(model) == start
    play.index_box.value = LATENT

    def failing(model_, tokens, interventions, **kwargs):
        with st.intervening(model_, interventions):
            assert n_hooks(model_) > start
            raise RuntimeError("boom")

    monkeypatch.setattr(st, "intervention_cost", failing)
    for method in (P.ADD, P.CLAMP):
        play.method_box.value = method
        assert play.generate() is None
        assert "Generation failed: RuntimeError: boom" in play.status.value
        assert n_hooks(model) == start
        assert not play.button.disabled and play.button.description == "generate"


def test_the_button_says_it_is_busy_while_generating(play, monkeypatch):
    seen = []
    real = st.continuations

    def watched(*args, **kwargs):
        seen.append((play.button.disabled, play.button.description, play.status.value))
        return real(*args, **kwargs)

    monkeypatch.setattr(st, "continuations", watched)
    play.generate()
    assert seen and all(disabled for disabled, _, _ in seen)
    assert all(d == "generating..." and "Generating 8 tokens" in s for _, d, s in seen)
    assert not play.button.disabled and play.button.description == "generate"


def test_it_is_deterministic(play, model, sae, cost_tokens, direction):
    first = play.generate()
    other = P.SteeringPlayground(model, sae, directions={"my direction": direction},
                                 cost_tokens=cost_tokens, latent=LATENT, n_tokens=N_TOKENS)
    again = other.generate()
    assert (again.unsteered.text, again.steered.text) == (first.unsteered.text,
                                                          first.steered.text)
    assert again.cost == first.cost
    play.seed_box.value = "3"
    sampled = play.generate()
    assert sampled.seed == 3 and "seed 3" in play.output.value
    other.seed_box.value = "3"
    assert other.generate().steered.text == sampled.steered.text
    texts = set()
    for seed in range(4):
        other.seed_box.value = str(seed)
        texts.add(other.generate().steered.text)
    assert len(texts) > 1  # sampling does sample


def test_steering_playground_shows_a_first_run(model, sae, cost_tokens):
    play = P.steering_playground(model, sae, cost_tokens=cost_tokens, latent=LATENT,
                                 n_tokens=N_TOKENS)
    assert play.last_run is not None and play.output.value
    assert P.steering_playground(model, sae, cost_tokens=cost_tokens,
                                 generate=False).last_run is None


def test_bad_arguments_say_what_is_wrong(model, sae, cost_tokens):
    with pytest.raises(ValueError, match="size 192"):
        P.SteeringPlayground(model, sae, directions={"v": torch.zeros(7)},
                             cost_tokens=cost_tokens)
    with pytest.raises(ValueError, match="may not be called"):
        P.SteeringPlayground(model, sae, directions={P.ADD: torch.zeros(192)},
                             cost_tokens=cost_tokens)
    with pytest.raises(ValueError, match="latents 0 to 1535"):
        P.SteeringPlayground(model, sae, scores={"x": 9999}, cost_tokens=cost_tokens)
    with pytest.raises(ValueError, match="Unknown label 'nope'"):
        P.SteeringPlayground(model, sae, scores={"x": 1}, cost_tokens=cost_tokens, label="nope")
    with pytest.raises(ValueError, match="Unknown method 'steer'"):
        P.SteeringPlayground(model, sae, cost_tokens=cost_tokens, method="steer")
    with pytest.raises(ValueError, match="alpha_ranges"):
        P.SteeringPlayground(model, sae, cost_tokens=cost_tokens, alpha_ranges={P.ADD: (3, 1)})


def test_nice_ceiling_and_score_text():
    assert [P.nice_ceiling(x) for x in (0.7, 1.0, 2.5, 27, 41, 80)] == [1, 1, 3, 30, 50, 100]
    scored = P.score_text(" The chef stirred the soup. The chef")
    assert scored.verdicts["topic"] == "cooking" and scored.n_sentences == 1
