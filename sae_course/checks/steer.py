"""Checks for notebook 06, steering with features and measuring its cost.

References: the library's `steering` (AddDirection, clamp, ablate, intervention_cost,
success_rate, difference_of_means), `attribution` and `steering_eval` (choose_strength,
pareto_front), or a few lines written out here where the library works on a whole model.
Every check runs the learner's code on inputs of its own (seeded; several sizes, dtypes and
arguments), keeps copies of the inputs and fails when they were changed in place; the checks
that use the model watch it (`harness.watch_model`) so that no hook is left behind.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from sae_course import steering as st
from sae_course import steering_eval as se
from sae_course.checks.harness import (
    CheckFailed,
    call,
    compare,
    passed,
    require,
    same_kind,
    seeded_generator,
    unchanged,
    watch_model,
)
from sae_course.evaluation import kl_divergence, next_token_loss
from sae_course.sae import SAE, SAEConfig


def _random_sae(d_in: int, d_sae: int, architecture: str, seed: int,
                dtype: torch.dtype = torch.float32) -> SAE:
    """A small SAE with random, non-trivial weights and biases (so the error term is not 0)."""
    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture=architecture,
                    k=3 if architecture == "topk" else None)
    sae = SAE(cfg, dtype=dtype, seed=seed)
    g = seeded_generator(seed)
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(d_sae, generator=g).to(dtype))
        sae.b_dec.copy_(0.3 * torch.randn(d_in, generator=g).to(dtype))
    return sae.eval()


# ---------------------------------------------------------------- interventions


def test_steer(steer: Callable) -> None:
    ex = "steer"
    cases = [((3, 7, 8), torch.float32, 2.5), ((2, 1, 8), torch.float32, -4.0),  # a cached step
             ((1, 1, 5), torch.float64, 0.5), ((4, 5, 6), torch.float64, 1.0)]
    for seed, (shape, dtype, alpha) in enumerate(cases):
        g = seeded_generator(100 + seed)
        resid = torch.randn(shape, generator=g, dtype=dtype)
        direction = torch.randn(shape[-1], generator=g)  # float32: the result keeps resid's
        not_bos = torch.ones(shape[:2], dtype=torch.bool)
        if shape[1] > 1:
            not_bos[:, 0] = False  # a first pass: BOS at position 0
            not_bos[-1, :2] = False  # a left-padded row: pad, then BOS
        kept = (resid.clone(), direction.clone(), not_bos.clone())
        got = call(ex, steer, resid, not_bos, direction, alpha)
        unchanged(ex, kept[0], resid, "resid")
        unchanged(ex, kept[1], direction, "direction")
        unchanged(ex, kept[2], not_bos, "not_bos")
        same_kind(ex, got, resid, "the steered activations")
        want = resid + alpha * direction.to(dtype) * not_bos[..., None]
        where = "a cached generation step [batch, 1, d]" if shape[1] == 1 else f"shape {shape}"
        compare(got, want, exercise=ex, what=f"the steered activations ({where}, alpha {alpha})",
                mistakes={"the BOS (and padding) positions were steered too":
                          resid + alpha * direction.to(dtype),
                          "a pass of one position (a cached generation step) was left alone":
                          resid,
                          "alpha was ignored": resid + direction.to(dtype) * not_bos[..., None],
                          "the direction was normalised": resid + alpha * (
                              direction / direction.norm()).to(dtype) * not_bos[..., None],
                          "only position 0 was left alone: use not_bos, which also marks left "
                          "padding (and a cached step's position 0 is a new token, to steer)":
                          _first_kept(resid + alpha * direction.to(dtype), resid)})
    passed(ex, "alpha * direction added at every non-BOS position, cached one-position passes "
               "included, inputs untouched, dtype kept (4 cases)")


@functools.lru_cache(maxsize=1)
def check_model() -> Any:
    """The offline model the checks run on: loaded once, never the notebook's own. One short
    generation warms it up: TransformerLens 4 installs hooks of its own on the first
    `generate`, which would otherwise look like hooks left behind by the learner's code."""
    from sae_course.models import load_model

    model = load_model("offline", device="cpu")
    st.generate(model, model.to_tokens("Tom", prepend_bos=True), 1)
    return model


@functools.lru_cache(maxsize=1)
def check_sae() -> SAE:
    """The main SAE of the shipped suite, for the checks that need a trained one."""
    from sae_course import pretrained

    main = next(p for p in pretrained.list_pretrained("storyworld-res") if p.role == "main")
    return pretrained.load_pretrained("storyworld-res", main.sae_id, device="cpu")


GENERATION_PROMPTS = ("Mara is a teacher. Mara lives in", "Tom is a clerk.")


def _first_kept(steered: Tensor, resid: Tensor) -> Tensor:
    out = steered.clone()
    out[:, 0] = resid[:, 0]
    return out


def test_steer_in_generation(steer: Callable, new_tokens: int = 8) -> None:
    """Generate greedily with the learner's `steer` in a hook, on the check model, and
    compare with the library's `AddDirection`: the same tokens, prompt and cached steps
    alike, for two directions, strengths and prompts."""
    ex = "steer"
    model, sae = check_model(), check_sae()
    hook_name = sae.cfg.extra["hook_name"]
    bos_id = model.tokenizer.bos_token_id
    cases = [(GENERATION_PROMPTS[0], 100, 60.0), (GENERATION_PROMPTS[1], 900, 40.0)]
    for text, latent, alpha in cases:
        prompt_tokens = model.to_tokens(text, prepend_bos=True)
        direction = se.unit(sae.W_dec[latent].detach())

        def hook(resid: Tensor, hook: Any, direction: Tensor = direction, alpha: float = alpha,
                 prompt_tokens: Tensor = prompt_tokens) -> Tensor:
            # one unpadded prompt: the first pass holds BOS at position 0, later passes one
            not_bos = torch.ones(resid.shape[:2], dtype=torch.bool, device=resid.device)
            if resid.shape[1] > 1 and int(prompt_tokens[0, 0]) == bos_id:
                not_bos[:, 0] = False
            return steer(resid, not_bos, direction, alpha)

        with watch_model(ex, model):
            try:
                with model.hooks(fwd_hooks=[(hook_name, hook)]):
                    got = model.generate(prompt_tokens, max_new_tokens=new_tokens,
                                         do_sample=False, use_past_kv_cache=True,
                                         return_type="tokens", verbose=False)
            except CheckFailed:
                raise
            except Exception as err:
                raise CheckFailed(f"{ex}: generating with your steer in a hook raised "
                                  f"{type(err).__name__}: {err}") from err
        want = st.generate(model, prompt_tokens, new_tokens,
                           [st.AddDirection(model, hook_name, direction, alpha)])
        prompt_only = st.generate(model, prompt_tokens, new_tokens,
                                  [_PromptOnly(model, hook_name, direction, alpha)])
        if not torch.equal(got, want):
            extra = (" They are the tokens of a hook that steers only the prompt: the cached "
                     "steps ([batch, 1, d]) went unsteered." if torch.equal(got, prompt_only)
                     else "")
            decode = model.tokenizer.decode
            raise CheckFailed(f"{ex}: from {text!r} with alpha {alpha}, generating with your "
                              f"hook gave {decode(got[0])!r}, the library's AddDirection "
                              f"{decode(want[0])!r}.{extra}")
        require(not torch.equal(want, prompt_only), ex,
                "this check's direction does not tell a correct hook from a prompt-only one "
                "(a bug in the check, not in your code).")
    passed(ex, f"in model.generate with the KV cache, {new_tokens} new tokens match the "
               "library's hook for 2 prompts and directions (a prompt-only hook's differ)")


class _PromptOnly(st.AddDirection):
    """The bug of a popular tutorial: a hook that acts only when it sees the whole prompt."""

    def _replacement(self, x: Tensor) -> Tensor:
        return super()._replacement(x) if x.shape[1] > 1 else x


def _clamp_reference(x: Tensor, sae: SAE, latents: list[int], value: float) -> Tensor:
    z = sae.encode(x)
    edited = z.clone()
    edited[..., latents] = value
    return sae.decode(edited) + (x - sae.decode(z))


def test_clamp_latents(clamp_latents: Callable) -> None:
    ex = "clamp_latents"
    cases = [(8, 24, "relu", [3], 5.0, torch.float32), (8, 24, "topk", [0, 7, 11], 2.0,
                                                          torch.float32),
             (6, 16, "relu", [15], 0.0, torch.float64), (10, 30, "topk", [29, 2], -1.5,
                                                          torch.float32)]
    for seed, (d_in, d_sae, arch, latents, value, dtype) in enumerate(cases):
        sae = _random_sae(d_in, d_sae, arch, seed, dtype)
        x = 2 * torch.randn(5, 4, d_in, generator=seeded_generator(200 + seed)).to(dtype)
        kept = (x.clone(), list(latents), {k: v.clone() for k, v in sae.state_dict().items()})
        with torch.no_grad():
            got = call(ex, clamp_latents, x, sae, latents, value)
        unchanged(ex, kept[0], x, "x")
        unchanged(ex, kept[1], latents, "latents")
        for name, before in kept[2].items():
            require(torch.equal(before, sae.state_dict()[name]), ex,
                    f"your code changed the SAE's {name}; it should only use the SAE.")
        same_kind(ex, got, x, "the clamped activations")
        with torch.no_grad():
            want = _clamp_reference(x, sae, latents, value)
            z = sae.encode(x)
            no_error = want - (x - sae.decode(z))
            plus = z.clone()
            plus[..., latents] += value
            added = sae.decode(plus) + (x - sae.decode(z))
            first = _clamp_reference(x, sae, latents[:1], value)
        compare(got, want, exercise=ex, what=f"x with latents {latents} clamped to {value} "
                f"({arch} SAE)", atol=1e-5,
                mistakes={"the error term x - x_hat was not added back (the output is the "
                          "SAE's reconstruction, not x edited)": no_error,
                          "value was added to the latents instead of setting them": added,
                          "only the first latent of the list was clamped": first,
                          "nothing changed (if you edited z in place, the error term "
                          "x - decode(z) was computed from the edited z and cancelled the edit: "
                          "clone z first)": x})
    passed(ex, "encode, set, decode, add back the error term; ReLU and TopK SAEs, several "
               "latents, inputs and SAE untouched (4 cases)")


def test_ablation_effect(ablation_effect: Callable) -> None:
    """On the check model and the shipped main SAE: the city fact of "Mara lives in", the
    latents most attributed to it (large effects) and one silent latent (no effect)."""
    from sae_course import attribution as attr
    from sae_course.storyworld import WORLD

    ex = "ablation_effect"
    model, sae = check_model(), check_sae()
    hook_name = sae.cfg.extra["hook_name"]
    embed = model.hook_dict["hook_embed"]
    cases = []
    for name in ("Mara", "Tom"):
        prompt = attr.fact_prompts(WORLD, name, "home")[0]
        city = attr.fact_answer(WORLD, name, "home")
        metric = attr.answer_metric(model, city, attr.candidates(WORLD, "home"))
        tokens = model.to_tokens(prompt, prepend_bos=True)
        found = attr.attribute(model, sae, tokens, metric)
        top = [int(i) for i in found.top(2)]
        silent = int((found.activations == 0).nonzero()[0])
        cases += [(tokens, metric, latent) for latent in top + [silent]]
    for tokens, metric, latent in cases:
        with torch.no_grad():
            clean = float(metric(model(tokens)))
        kept = tokens.clone()
        with watch_model(ex, model, count_calls_of=embed) as watch, torch.no_grad():
            got = call(ex, ablation_effect, model, sae, tokens, metric, latent)
        unchanged(ex, kept, tokens, "tokens")
        require(watch.forward_passes <= 2, ex,
                f"your code ran {watch.forward_passes} forward passes for one latent; two "
                "(clean and ablated) are enough.")
        with torch.no_grad(), st.ablated(model, sae, latent):
            want = clean - float(metric(model(tokens)))
        with torch.no_grad():
            no_error = clean - float(metric(model.run_with_hooks(tokens, fwd_hooks=[
                (hook_name, _no_error_ablation(sae, latent))])))
            with_bos = clean - float(metric(model.run_with_hooks(tokens, fwd_hooks=[
                (hook_name, _bos_ablation(sae, latent))])))
        try:
            got_f = float(got)
        except (TypeError, ValueError) as err:
            raise CheckFailed(f"{ex}: return one number, got {got!r}.") from err
        if math.isclose(got_f, want, rel_tol=1e-3, abs_tol=1e-4):
            continue
        hint = ""
        if math.isclose(got_f, -want, rel_tol=1e-3, abs_tol=1e-4):
            hint = " That is minus the answer: the effect is M(clean) - M(ablated)."
        elif math.isclose(got_f, no_error, rel_tol=1e-3, abs_tol=1e-4):
            hint = (" That is the drop when the block's output is the SAE's reconstruction: "
                    "add back the error term x - x_hat, so that only the latent changes.")
        elif math.isclose(got_f, with_bos, rel_tol=1e-3, abs_tol=1e-4):
            hint = " The BOS position was edited too: put position 0 back from the input."
        prompt = model.tokenizer.decode(tokens[0, 1:])
        raise CheckFailed(f"{ex}: latent {latent} on {prompt!r}: you returned "
                          f"{got_f:.5f}, expected {want:.5f}.{hint}")
    passed(ex, f"M(clean) - M(latent zeroed, error kept) for {len(cases)} latents on 2 prompts, "
               "at most 2 forward passes each, no hook left behind")


def _bos_ablation(sae: SAE, latent: int) -> Callable[[Tensor, Any], Tensor]:
    def hook(x: Tensor, hook: Any) -> Tensor:
        return _clamp_reference(x, sae, [latent], 0.0)
    return hook


def _no_error_ablation(sae: SAE, latent: int) -> Callable[[Tensor, Any], Tensor]:
    def hook(x: Tensor, hook: Any) -> Tensor:
        z = sae.encode(x)
        z[..., latent] = 0
        out = sae.decode(z)
        out[:, 0] = x[:, 0]
        return out
    return hook


# ---------------------------------------------------------------- attribution


def _latents_and_gradient(x: Tensor, sae: SAE, downstream: Callable[[Tensor], Tensor]
                          ) -> tuple[Tensor, Tensor]:
    """z [pos, d_sae] and d downstream / dz through the splice with the error term detached."""
    with torch.enable_grad():
        z = sae.encode(x).detach().requires_grad_(True)
        x_hat = sae.decode(z)
        (grad,) = torch.autograd.grad(downstream(x_hat + (x - x_hat).detach()), z)
    return z.detach(), grad


def test_latent_attribution(latent_attribution: Callable) -> None:
    ex = "latent_attribution"
    for seed, (d_in, d_sae, arch, pos) in enumerate(((8, 24, "relu", 5), (6, 20, "topk", 7),
                                                      (10, 32, "relu", 1))):
        sae = _random_sae(d_in, d_sae, arch, 10 + seed)
        g = seeded_generator(300 + seed)
        x = 2 * torch.randn(pos, d_in, generator=g)
        w, u = torch.randn(d_in, generator=g), torch.randn(d_in, generator=g)
        seen: list[Tensor] = []

        def downstream(h: Tensor, w: Tensor = w, u: Tensor = u, seen: list = seen) -> Tensor:
            seen.append(h.detach().clone())
            return (torch.tanh(h @ w) * (h @ u)).sum()  # non-linear, so z * grad is not exact

        kept = x.clone()
        got = call(ex, latent_attribution, x, sae, downstream)
        unchanged(ex, kept, x, "x")
        require(bool(seen), ex, "call downstream(...) on the activations rebuilt by the SAE.")
        require(all(torch.allclose(h, x, atol=1e-5) for h in seen), ex,
                "downstream saw activations different from x. Rebuild x as x_hat + (x - x_hat)"
                ".detach(): the forward pass must stay the clean one, with the error term "
                "added back.")
        z, grad = _latents_and_gradient(x, sae, downstream)
        want = (z * grad).sum(0)
        compare(got, want, exercise=ex, what=f"the attribution of {d_sae} latents over {pos} "
                f"positions", atol=1e-4, rtol=1e-4,
                mistakes={"the gradient alone (not multiplied by the activation)": grad.sum(0),
                          "all zero: the error term was not detached, so x_hat + error = x "
                          "does not depend on the latents": torch.zeros_like(want),
                          "one row per position (sum over positions)": z * grad})
    passed(ex, "activation x gradient summed over positions, forward pass unchanged, x "
               "untouched (3 SAEs)")


# ---------------------------------------------------------------- measures


def test_success_rate(success_rate: Callable) -> None:
    ex = "success_rate"
    texts = ["The cook baked the bread.", "The astronaut saw the moon.", "Tom was a clerk.",
             "The cook fried the soup. The cook baked the cake.", ""]
    cases = [(texts, "topic", "cooking"), (texts, "topic", "space"),
             (texts[2:3], "topic", "cooking"),
             (["Tom was glad.", "Tom is glad.", "Tom was sad."], "tense", "past"),
             (["Tom was glad.", "Tom was sad.", "Tom was gloomy."], "sentiment", "negative")]
    for texts_, concept, target in cases:
        kept = list(texts_)
        got = call(ex, success_rate, texts_, st.SCORERS[concept], target)
        unchanged(ex, kept, texts_, "texts")
        want = st.success_rate(texts_, concept, target)
        require(isinstance(got, float | int) and math.isclose(float(got), want), ex,
                f"{len(texts_)} texts scored by the {concept} scorer for {target!r}: you returned "
                f"{got!r}, expected {want:.3f} (the share of texts whose verdict is the target; "
                "a text with no verdict counts as a miss).")
    got = call(ex, success_rate, [], st.SCORERS["topic"], "space")
    require(isinstance(got, float) and math.isnan(got), ex,
            f"with no texts there is no rate: return float('nan'), not {got!r}.")
    passed(ex, "the share of texts the scorer assigns to the target, misses included, nan for "
               "no texts (6 cases)")


def _cost_reference(clean: Tensor, steered: Tensor, tokens: Tensor, bos_id: int
                    ) -> tuple[float, float]:
    predicted = tokens[:, :-1] != bos_id
    ce = (next_token_loss(steered, tokens) - next_token_loss(clean, tokens))[predicted]
    kl = kl_divergence(clean[:, :-1], steered[:, :-1])[predicted]
    return float(ce.double().mean()), float(kl.double().mean())


def test_steering_cost(steering_cost: Callable) -> None:
    ex = "steering_cost"
    for seed, (b, pos, vocab, bos_id) in enumerate(((3, 9, 11, 0), (2, 6, 7, 6), (4, 12, 5, 2))):
        g = seeded_generator(400 + seed)
        tokens = torch.randint(0, vocab, (b, pos), generator=g)
        tokens[tokens == bos_id] = (bos_id + 1) % vocab
        tokens[:, 0] = bos_id
        tokens[0, pos // 2] = bos_id  # a second story starts inside the first context
        clean = 2 * torch.randn(b, pos, vocab, generator=g)
        steered = clean + torch.randn(b, pos, vocab, generator=g) * (1 + seed)
        kept = (clean.clone(), steered.clone(), tokens.clone())
        got = call(ex, steering_cost, clean, steered, tokens, bos_id)
        unchanged(ex, kept[0], clean, "clean_logits")
        unchanged(ex, kept[1], steered, "steered_logits")
        unchanged(ex, kept[2], tokens, "tokens")
        require(isinstance(got, tuple) and len(got) == 2, ex,
                "return (ce_increase, kl), two numbers.")
        ce, kl = _cost_reference(clean, steered, tokens, bos_id)
        shifted = tokens[:, 1:] != bos_id
        ce_shift = float((next_token_loss(steered, tokens)
                          - next_token_loss(clean, tokens))[shifted].double().mean())
        ce_all, kl_all = _cost_reference(clean, steered, tokens, -1)
        _, kl_reversed = _cost_reference(steered, clean, tokens, bos_id)
        for value, want, name, mistakes in (
                (got[0], ce, "ce_increase", {"the BOS positions were counted": ce_all,
                                             "the mask was taken on the predicted tokens "
                                             "(tokens[:, 1:]), not on the positions that "
                                             "predict them (tokens[:, :-1])": ce_shift}),
                (got[1], kl, "kl", {"KL(steered || clean) instead of KL(clean || steered)":
                                    kl_reversed, "the BOS positions were counted": kl_all})):
            compare(torch.tensor(float(value), dtype=torch.float64),
                    torch.tensor(want, dtype=torch.float64), exercise=ex,
                    what=f"{name} on [{b}, {pos}] tokens (BOS id {bos_id})", atol=1e-5,
                    mistakes={k: torch.tensor(v, dtype=torch.float64)
                              for k, v in mistakes.items()})
    passed(ex, "mean CE increase and KL(clean || steered) over the predictions of non-BOS "
               "positions, inputs untouched (3 cases)")


def test_difference_of_means(difference_of_means: Callable) -> None:
    ex = "difference_of_means"
    for seed, (n, d, p, dtype) in enumerate(((50, 8, 0.2, torch.float32), (31, 5, 0.7,
                                                                           torch.float64),
                                             (12, 3, 0.5, torch.float32))):
        g = seeded_generator(500 + seed)
        resid = torch.randn(n, d, generator=g, dtype=dtype) + 3.0
        mask = torch.rand(n, generator=g) < p
        mask[0], mask[1] = True, False
        kept = (resid.clone(), mask.clone())
        got = call(ex, difference_of_means, resid, mask)
        unchanged(ex, kept[0], resid, "resid")
        unchanged(ex, kept[1], mask, "mask")
        same_kind(ex, got, resid, "the direction")
        want = st.difference_of_means(resid, mask)
        compare(got, want, exercise=ex, what=f"the difference of means ({int(mask.sum())} of {n} "
                "rows in the mask)", atol=1e-5,
                mistakes={"the sign is flipped (mean of the rest minus mean of the mask)": -want,
                          "the mask's mean minus the mean of all rows":
                          resid[mask].mean(0) - resid.mean(0),
                          "the mask's mean alone": resid[mask].mean(0)})
    resid = torch.randn(2, 4, 6, generator=seeded_generator(9))
    mask = torch.tensor([[True, False, False, True], [False, False, True, False]])
    compare(call(ex, difference_of_means, resid, mask), st.difference_of_means(resid, mask),
            exercise=ex, what="the difference of means of resid [2, 4, 6], mask [2, 4]",
            atol=1e-5)
    passed(ex, "mean of the masked rows minus mean of the rest, any leading shape, dtype kept "
               "(4 cases)")


# ---------------------------------------------------------------- the protocol


def _points(rows: list[tuple[str, float, str, float, float]]) -> list[se.SteeringPoint]:
    return [se.SteeringPoint(method=m, strength=s, split=sp, success=succ, ce_increase=ce,
                             kl=ce, perplexity=1.0, repetition=0.0, well_formed=1.0)
            for m, s, sp, succ, ce in rows]


def _protocol_cases() -> list[tuple[list[se.SteeringPoint], str, float]]:
    a = _points([("a", 0, "train", .1, 0), ("a", 1, "train", .5, .2), ("a", 2, "train", .8, .6),
                 ("a", 3, "train", .9, 1.4), ("a", 0, "test", .1, 0), ("a", 1, "test", .45, .21),
                 ("a", 2, "test", .95, .58), ("a", 3, "test", .6, 1.3),
                 ("b", 0, "train", .1, 0), ("b", 5, "train", .7, .1), ("b", 0, "test", .1, 0),
                 ("b", 5, "test", .75, .1)])
    ties = _points([("t", 0, "train", .2, 0), ("t", 1, "train", .6, .1),
                    ("t", 2, "train", .6, .3), ("t", 0, "test", .2, 0),
                    ("t", 1, "test", .4, .1), ("t", 2, "test", .9, .3)])
    costly = _points([("c", 0, "train", .3, 0), ("c", 4, "train", .9, 2.0),
                      ("c", 0, "test", .3, 0), ("c", 4, "test", .95, 2.0)])
    unswept = _points([("d", 2, "train", .6, .8), ("d", 4, "train", .9, 1.5),
                       ("d", 2, "test", .5, .7), ("d", 4, "test", .8, 1.6)])  # no strength 0
    return [(a, "a", 0.7), (a, "a", 0.3), (a, "a", 2.0), (a, "b", 0.5), (ties, "t", 0.5),
            (costly, "c", 0.5), (unswept, "d", 0.5)]


def test_choose_strength(choose_strength: Callable) -> None:
    ex = "choose_strength"
    for points, method, budget in _protocol_cases():
        kept = list(points)
        got = call(ex, choose_strength, points, method, budget)
        unchanged(ex, kept, points, "points")
        want = se.choose_strength(points, method, budget)
        if got == want:
            continue
        test = [p for p in points if p.method == method and p.split == "test"
                and p.ce_increase <= budget]
        on_test = max(test, key=lambda p: (p.success, -p.ce_increase)).strength if test else None
        train = {p.strength: p for p in points if p.method == method and p.split == "train"}
        hint = ""
        if (got in train and want in train and got != want
                and train[got].success == train[want].success
                and train[got].ce_increase > train[want].ce_increase):
            hint = (f" Strengths {want} and {got} tie on training success; a tie goes to the "
                    "cheaper one.")
        elif got == on_test:
            hint = " That is the best strength on the test prompts: choose on 'train' only."
        elif any(p.strength == got and p.ce_increase > budget for p in points
                 if p.method == method and p.split == "train"):
            hint = f" Strength {got} costs more than the budget {budget} on the training prompts."
        raise CheckFailed(f"{ex}: method {method!r}, budget {budget}: you chose strength "
                          f"{got!r}, expected {want}.{hint}")
    passed(ex, "the best training success within the budget, the cheaper of two ties, the "
               "clean model (or the weakest strength swept) when nothing fits, test points never "
               "looked at (7 cases)")


def test_pareto_front(pareto_front: Callable) -> None:
    ex = "pareto_front"
    cases = [p for p, _, _ in _protocol_cases()]
    cases.append(_points([("x", 1, "test", .5, .2), ("y", 1, "test", .5, .2),
                          ("z", 1, "test", .5, .3), ("w", 1, "test", .4, .2)]))
    for points in cases:
        kept = list(points)
        got = call(ex, pareto_front, points)
        unchanged(ex, kept, points, "points")
        want = se.pareto_front(points)
        try:
            ok = list(got) == want
        except TypeError as err:
            raise CheckFailed(f"{ex}: return a list of points, got {type(got).__name__}.") from err
        if ok:
            continue
        got_l = list(got)
        hint = ""
        if set(map(id, got_l)) == set(map(id, want)):
            hint = " The right points in the wrong order: sort them by cost."
        elif any(q.success >= p.success and q.ce_increase <= p.ce_increase and
                 (q.success > p.success or q.ce_increase < p.ce_increase)
                 for p in got_l for q in points):
            hint = " A point you kept is beaten by another (as good on both axes, better on one)."
        else:
            missing = [p for p in want if all(p is not q for q in got_l)]
            twins = all(any(q is not p and q.success == p.success
                            and q.ce_increase == p.ce_increase for q in points)
                        for p in missing)
            if missing and twins:
                hint = " Two points that tie on both axes beat neither: keep both."
            elif missing:
                p = missing[0]
                hint = (f" You dropped ({p.success}, {p.ce_increase}), which no point beats: "
                        "a point is beaten only by one at least as good on both axes and "
                        "better on one.")
        raise CheckFailed(f"{ex}: on {len(points)} points you returned {len(got_l)}, expected "
                          f"{len(want)}: {[(p.success, p.ce_increase) for p in want]}.{hint}")
    passed(ex, "the undominated points by cost, ties kept (8 cases)")
