"""Steering hooks under cached generation, clamping and ablation with the error term, the
evaluation measures, and one measured claim: an SAE topic latent's decoder row steers the
offline model towards its topic where a random direction of the same norm does not."""

from __future__ import annotations

import pytest
import torch

import sae_course.storyworld as sw
from sae_course import steering as st
from sae_course.features import latent_activations
from sae_course.models import load_model
from sae_course.pretrained import load_pretrained
from sae_course.scorecard import counted_features, label_scores
from sae_course.settings import cpu_threads

HOOK = "blocks.2.hook_resid_pre"
MAIN_SAE = "blocks.2.hook_resid_pre/topk-1536-k16"


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


@pytest.fixture(scope="module")
def model():
    return load_model("offline", device="cpu")


@pytest.fixture(scope="module")
def sae():
    return load_pretrained("storyworld-res", MAIN_SAE)


@pytest.fixture(scope="module")
def prompt(model):
    """A neutral story opening: what follows is open, so a direction can change it."""
    return model.to_tokens("Malik was a clerk. Malik had a dog called Daisy.")


@pytest.fixture(scope="module")
def direction(model):
    v = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    return 30 * v / v.norm()


def n_hooks(model) -> int:
    return sum(len(hp.fwd_hooks) + len(hp.bwd_hooks) for hp in model.hook_points())


def greedy_uncached(model, tokens, n_new, interventions):
    """The reference: the whole sequence through the model at every step, hooks on."""
    with torch.no_grad(), st.intervening(model, interventions):
        for _ in range(n_new):
            nxt = model(tokens)[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, nxt], dim=1)
    return tokens


def recorder(store):
    def record(x, hook):
        store.append(x.detach().clone())
    return record


# --------------------------------------------------------------------------- generated tokens


def test_cached_generation_is_steered_at_every_step(model, prompt, direction):
    add = st.AddDirection(model, HOOK, direction, alpha=1.0)
    cached = st.generate(model, prompt, 12, [add])
    assert torch.equal(cached, greedy_uncached(model, prompt, 12, [add]))
    assert torch.equal(cached, st.generate(model, prompt, 12, [add], use_past_kv_cache=False))
    assert not torch.equal(cached, st.generate(model, prompt, 12))  # the direction does act


def test_each_cached_step_gets_the_direction(model, prompt, direction):
    before, after = [], []
    add = st.AddDirection(model, HOOK, direction, alpha=0.5)
    hooks = [(HOOK, recorder(before)), *add.fwd_hooks, (HOOK, recorder(after))]
    st.generate(model, prompt, 5, hooks)
    assert [x.shape[1] for x in before] == [prompt.shape[1], 1, 1, 1, 1]  # prefill, then steps
    for i, (x0, x1) in enumerate(zip(before, after, strict=True)):
        want = (0.5 * direction).expand_as(x0).clone()
        if i == 0:
            want[:, 0] = 0  # BOS
        torch.testing.assert_close(x1 - x0, want, atol=1e-4, rtol=0)


def test_a_prompt_only_hook_misses_what_the_real_one_changes(model, prompt, direction):
    """A hook that acts only on passes of more than one position (a common bug under KV
    caching) gives other generated tokens than the hook that steers every step."""
    add = st.AddDirection(model, HOOK, direction, alpha=1.0)

    def prompt_only(x, hook):
        return add._splice(x, hook) if x.shape[1] > 1 else x

    buggy = [add.fwd_hooks[0], add.fwd_hooks[1], (HOOK, prompt_only)]
    assert not torch.equal(st.generate(model, prompt, 12, buggy),
                           st.generate(model, prompt, 12, [add]))


def test_bos_is_never_steered(model, prompt, direction):
    clean, steered = [], []
    model.run_with_hooks(prompt, fwd_hooks=[(HOOK, recorder(clean))])
    with st.steering(model, HOOK, direction, alpha=3.0) as s:
        model.run_with_hooks(prompt, fwd_hooks=[(HOOK, recorder(steered))])
    assert s.bos[:, 0].all() and not s.bos[:, 1:].any()
    torch.testing.assert_close(steered[0][:, 0], clean[0][:, 0])
    assert (steered[0][:, 1:] - clean[0][:, 1:]).norm(dim=-1).min() > 80


def test_left_padded_batch_generates_as_each_prompt_alone(model, direction):
    prompts = ["Mara is a teacher.", "Otto lived in Munich. Otto was a tailor."]
    add = st.AddDirection(model, HOOK, direction, alpha=1.0)
    batched = st.continuations(model, prompts, 8, [add])
    for p, got in zip(prompts, batched, strict=True):
        alone = st.generate(model, model.to_tokens(p), 8, [add])[0, len(model.to_tokens(p)[0]):]
        assert torch.equal(got, alone[: len(got)])


# --------------------------------------------------------------------------- clamp and ablate


def _one_token(model):
    return model.to_tokens("Mara")  # [BOS, Mara]: one position that is not BOS


def test_clamping_a_latent_to_its_own_value_changes_nothing(model, sae):
    tokens = _one_token(model)
    x = []
    clean = model.run_with_hooks(tokens, fwd_hooks=[(HOOK, recorder(x))])
    z = sae.encode(x[0]).detach()[0, 1]
    active = int(z.argmax())
    with st.clamped(model, sae, active, float(z[active])):
        torch.testing.assert_close(model(tokens), clean, atol=1e-4, rtol=1e-4)
    with st.clamped(model, sae, active, float(z[active]) + 2.0):
        assert (model(tokens) - clean).abs().max() > 1e-2


def test_clamp_moves_x_along_the_decoder_row_only(model, sae):
    tokens = model.to_tokens("Mara is a teacher.")
    before, after = [], []
    splice = st.clamp(model, sae, 7, 5.0)
    model.run_with_hooks(tokens, fwd_hooks=[(HOOK, recorder(before)), *splice.fwd_hooks,
                                            (HOOK, recorder(after))])
    z7 = sae.encode(before[0])[..., 7]
    want = (5.0 - z7)[..., None] * sae.W_dec[7].detach()
    want[:, 0] = 0  # BOS untouched
    torch.testing.assert_close(after[0] - before[0], want, atol=1e-3, rtol=1e-4)


def test_ablating_nothing_is_clean_and_ablating_moves_by_the_latent(model, sae):
    tokens = model.to_tokens("Mara is a teacher.")
    x = []
    clean = model.run_with_hooks(tokens, fwd_hooks=[(HOOK, recorder(x))])
    with st.ablated(model, sae, []):
        torch.testing.assert_close(model(tokens), clean, atol=1e-4, rtol=1e-4)
    z = sae.encode(x[0]).detach()
    top = int(z[0, 1:].sum(0).argmax())
    after = []
    with st.ablated(model, sae, [top]):
        model.run_with_hooks(tokens, fwd_hooks=[(HOOK, recorder(after))])
    want = -z[..., top, None] * sae.W_dec[top].detach()
    want[:, 0] = 0
    torch.testing.assert_close(after[0] - x[0], want, atol=1e-3, rtol=1e-4)


# --------------------------------------------------------------------------- errors and RNG


def test_hooks_are_removed_even_after_an_error(model, sae, prompt, direction):
    start = n_hooks(model)
    for context in (st.steering(model, HOOK, direction), st.clamped(model, sae, 3, 1.0),
                    st.ablated(model, sae, [3])):
        with pytest.raises(RuntimeError, match="boom"), context:
            assert n_hooks(model) > start
            raise RuntimeError("boom")
        assert n_hooks(model) == start
    bad = st.AddDirection(model, "blocks.0.attn.hook_z", torch.zeros(7))
    with pytest.raises(ValueError, match="size 7"):
        st.generate(model, prompt, 3, [bad])
    assert n_hooks(model) == start


def test_bad_hook_and_bad_direction_say_what_is_wrong(model, sae):
    with pytest.raises(ValueError, match="Valid hook names.*hook_resid_pre"):
        st.AddDirection(model, "blocks.2.resid_pre", torch.zeros(model.cfg.d_model))
    d = model.cfg.d_model
    with pytest.raises(ValueError, match=f"size {d + 1}.*size {d}"):
        st.AddDirection(model, HOOK, torch.zeros(d + 1))
    with pytest.raises(IndexError, match="latents 0..1535"):
        st.clamp(model, sae, 5000, 1.0)


def test_seeded_sampling_is_reproducible_and_leaves_the_rng_alone(model, prompt, direction):
    add = st.AddDirection(model, HOOK, direction, alpha=0.3)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = st.generate(model, prompt.expand(4, -1), 10, [add], seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, st.generate(model, prompt.expand(4, -1), 10, [add], seed=5))
    assert not torch.equal(a, st.generate(model, prompt.expand(4, -1), 10, [add], seed=6))
    assert torch.equal(st.generate(model, prompt, 6), st.generate(model, prompt, 6))


# --------------------------------------------------------------------------- measures


def test_repetition_and_well_formed_sentences():
    assert st.repetition_rate("the cat sat on the mat") == 0.0
    assert st.repetition_rate("a b a b a b") == pytest.approx(1 - 2 / 5)  # ab, ba of 5
    assert st.repetition_rate("one") == 0.0
    good = sw.generate_story(0).text
    assert st.well_formed_fraction([good]) == 1.0
    assert st.well_formed_fraction([good + " The regolith"]) == 1.0  # cut-off end ignored
    assert st.well_formed_fraction([good + ' "The pot is hot,"']) == 1.0
    assert st.well_formed_fraction(["Blue fish sing loudly. " + good]) < 1.0


def test_neutral_prompts_show_no_topic_or_sentiment_word():
    stories = sw.generate_stories(40, seed=3)
    prompts = st.neutral_prompts(stories)
    assert len(prompts) > 20
    for p in prompts:
        assert sw.classify_topic(p) is None and sw.sentiment_score(p) == 0
        assert p.endswith(".")
    assert st.success_rate(["The chef stirred the soup."], "topic", "cooking") == 1.0


def test_difference_of_means_and_random_direction():
    resid = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    mask = torch.tensor([True, True, False])
    torch.testing.assert_close(st.difference_of_means(resid, mask), torch.tensor([2.0, -2.0]))
    with pytest.raises(ValueError, match="both sides"):
        st.difference_of_means(resid, torch.ones(3, dtype=torch.bool))
    v = torch.arange(6.0)
    r = st.random_direction(v, seed=0)
    assert r.norm() == pytest.approx(float(v.norm()), rel=1e-5)
    assert torch.equal(r, st.random_direction(v, seed=0))
    assert not torch.equal(r, st.random_direction(v, seed=1))


def test_cost_is_zero_without_change_and_grows_with_alpha(model, direction):
    tokens = sw.labelled_contexts(model.tokenizer, 4, 32, seed=7).tokens
    none = st.intervention_cost(model, tokens, [st.AddDirection(model, HOOK, direction, 0.0)])
    assert none.ce_increase == pytest.approx(0.0, abs=1e-5)
    assert none.kl == pytest.approx(0.0, abs=1e-5)
    small, big = (st.intervention_cost(model, tokens, [st.AddDirection(model, HOOK, direction, a)])
                  for a in (0.5, 3.0))
    assert 0 < small.kl < big.kl and small.ce_increase < big.ce_increase
    prompt = model.to_tokens("Mara is a teacher.")[0]
    cont = st.generate(model, prompt, 8)[0, len(prompt):]
    ppl = st.continuation_perplexity(model, [prompt], [cont])
    assert 1.0 <= ppl < 3.0  # the clean model's own greedy text is likely to it


# --------------------------------------------------------------------------- measured steering


def test_sae_topic_latent_steers_to_its_topic_better_than_random(model, sae):
    """Measured (offline model, main SAE, 24 held-out neutral prompts, 16 greedy tokens, space
    topic, latent 315 of the shipped SAE, alpha 6 times its decoder row of norm 6.8): 0.25 of
    the unsteered continuations score as space, 0.92 with the SAE row, 0.125 with the random
    direction of the same norm (0.125 and 0.0 with random seeds 1 and 2)."""
    contexts = sw.labelled_contexts(model.tokenizer, 32, 128, seed=0)
    names = [f"topic_word={t}" for t in sw.TOPICS]
    acts = latent_activations(model, sae, contexts, progress=False)
    scores = label_scores(acts, counted_features(contexts, names), names)
    latent = int(scores.f1[:, names.index("topic_word=space")].argmax())
    row = st.decoder_direction(sae, latent)
    prompts = st.neutral_prompts(sw.generate_stories(40, seed=12345))[:24]

    def success(interventions):
        conts = st.continuations(model, prompts, 16, interventions)
        return st.success_rate([model.tokenizer.decode(c) for c in conts], "topic", "space")

    clean = success([])
    sae_row = success([st.AddDirection(model, HOOK, row, alpha=6.0)])
    rand = success([st.AddDirection(model, HOOK, st.random_direction(row, seed=0), alpha=6.0)])
    assert sae_row >= rand + 0.4, (clean, sae_row, rand)
    assert sae_row >= clean + 0.3, (clean, sae_row, rand)
