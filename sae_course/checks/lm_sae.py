"""Checks for notebook 04, training an SAE on a language model.

The references are the library's: `training.TrainConfig` (the schedule) and `train_sae` (the
loop), `activations.fold_scale_into_sae`, `splice.Splice`, and `evaluation` (CE, KL, firing
density). The splice check runs on an offline model of its own (never the
notebook's) and removes every hook from it afterwards, so a failing attempt cannot break
later cells.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sae_course import activations as acts_ref
from sae_course import evaluation as ev
from sae_course import text
from sae_course.broken_runs import DIAGNOSES, load_broken_runs
from sae_course.checks.harness import CheckFailed, call, compare, passed, require, seeded_generator
from sae_course.sae import SAE, SAEConfig
from sae_course.splice import Splice, bos_mask
from sae_course.training import TrainConfig, train_sae


@functools.lru_cache(maxsize=1)
def check_model() -> Any:
    """The offline model the splice check runs on: loaded once, only ever used by checks."""
    from sae_course.models import load_model

    return load_model("offline", device="cpu")


def _floats(values: Any, exercise: str, what: str) -> Tensor:
    try:
        return torch.tensor([float(v) for v in values], dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise CheckFailed(f"{exercise}: {what} should be numbers, got {values!r}.") from err


def _unchanged(before: Tensor, after: Tensor, exercise: str, what: str) -> None:
    require(torch.equal(before, after), exercise,
            f"your code changed {what} in place; work on new tensors and leave the inputs as "
            "they were (the caller may still need them).")


# ---------------------------------------------------------------- the schedule


def test_schedule(schedule: Callable) -> None:
    ex = "schedule"
    cases = [(100, 1e-3, 10, 20, 30), (10, 0.5, 8, 5, 0), (50, 3e-4, 0, 0, 50),
             (1, 1e-2, 0, 1, 1), (20, 2e-3, 20, 20, 5), (30, 4e-4, 3, 0, 7)]
    for n_steps, lr, warm, decay, sparse_warm in cases:
        cfg = TrainConfig(n_steps=n_steps, lr=lr, lr_warmup_steps=warm, lr_decay_steps=decay,
                          sparsity_warmup_steps=sparse_warm, progress=False)
        got_lr, got_factor = [], []
        for step in range(n_steps):
            out = call(ex, schedule, step, n_steps, lr, warm, decay, sparse_warm)
            require(isinstance(out, tuple) and len(out) == 2, ex,
                    f"return a tuple (learning rate, sparsity factor), got {out!r}.")
            got_lr.append(out[0])
            got_factor.append(out[1])
        steps = torch.arange(n_steps, dtype=torch.float64)
        what = (f"the learning rates (n_steps={n_steps}, lr={lr}, lr_warmup_steps={warm}, "
                f"lr_decay_steps={decay})")
        warm_up = (steps + 1) / warm if warm else torch.ones_like(steps)
        warm_up = warm_up.clamp(max=1)
        decay_f = ((n_steps - steps) / decay).clamp(max=1) if decay else torch.ones_like(steps)
        compare(_floats(got_lr, ex, "learning rates"),
                torch.tensor([cfg.lr_at(s) for s in range(n_steps)], dtype=torch.float64),
                exercise=ex, what=what, rtol=1e-6, atol=1e-12, mistakes={
                    "the warm-up starts from 0 (step / warmup instead of (step + 1) / warmup)":
                        lr * (steps / warm if warm else torch.ones_like(steps)).clamp(max=1)
                        * decay_f,
                    "the decay reaches 0 one step early (it should end at lr / decay_steps)":
                        lr * warm_up * (((n_steps - 1 - steps) / decay).clamp(max=1)
                                        if decay else 1),
                    "the decay replaces the warm-up where they overlap (multiply the two)":
                        lr * torch.where(steps >= n_steps - decay, decay_f, warm_up)
                        if decay else lr * warm_up,
                    "there is no decay": lr * warm_up,
                })
        factor_ok = ((steps + 1) / sparse_warm).clamp(max=1) if sparse_warm else \
            torch.ones_like(steps)
        compare(_floats(got_factor, ex, "sparsity factors"),
                torch.tensor([cfg.sparsity_factor_at(s) for s in range(n_steps)],
                             dtype=torch.float64),
                exercise=ex, what=f"the sparsity factors (sparsity_warmup_steps={sparse_warm})",
                rtol=1e-6, atol=1e-12, mistakes={
                    "the sparsity factor keeps growing after its warm-up (cap it at 1)":
                        (steps + 1) / sparse_warm if sparse_warm else factor_ok,
                    "the sparsity factor starts from 0 (step / warmup)":
                        (steps / sparse_warm).clamp(max=1) if sparse_warm else factor_ok,
                    "the sparsity factor follows the learning-rate warm-up": warm_up,
                })
    passed(ex, f"learning rate and sparsity factor match TrainConfig at every step of "
               f"{len(cases)} schedules (warm-ups, decays, overlaps, none)")


# ---------------------------------------------------------------- the training loop


def _loop_data(seed: int, n_steps: int, n: int, d_in: int) -> list[Tensor]:
    """Sparse combinations of 48 random directions, plus an offset: SAE-shaped data."""
    g = seeded_generator(seed)
    directions = torch.randn(48, d_in, generator=g)
    offset = torch.randn(d_in, generator=g)
    out = []
    for _ in range(n_steps):
        active = (torch.rand(n, 48, generator=g) < 0.06).float()
        out.append((active * torch.rand(n, 48, generator=g)) @ directions + offset)
    return out


def test_train_loop(train_loop: Callable) -> None:
    ex = "train_loop"
    cases = [
        ("a ReLU SAE with unit-norm decoder rows",
         SAEConfig(d_in=16, d_sae=48, architecture="relu", l1_variant="unit_norm",
                   sparsity_coefficient=0.3), dict(lr=3e-3, lr_warmup_steps=5,
                                                    lr_decay_steps=10, sparsity_warmup_steps=12)),
        ("a TopK SAE whose dead latents get the AuxK loss",
         SAEConfig(d_in=16, d_sae=64, architecture="topk", k=3, dead_after_tokens=128),
         dict(lr=5e-3, lr_warmup_steps=4)),
        ("a JumpReLU SAE (L0 penalty)",
         SAEConfig(d_in=16, d_sae=40, architecture="jumprelu", sparsity_coefficient=0.05,
                   jumprelu_bandwidth=0.05, jumprelu_init_threshold=0.05),
         dict(lr=2e-3, sparsity_warmup_steps=20, lr_decay_steps=8)),
    ]
    # One bar while the 3 pairs of runs train (hidden once they pass); the success line
    # stays the only thing a passing check leaves.
    with tqdm(cases, desc=f"{ex}: your loop beside train_sae", unit="SAE",
              leave=False) as bar:
        for seed, (label, sae_cfg, options) in enumerate(bar):
            _check_train_loop_case(train_loop, seed, label, sae_cfg, options)
    passed(ex, f"losses and every weight match train_sae after 24 to 36 steps on "
               f"{len(cases)} architectures (warm-ups, decay, unit-norm rows, AuxK, L0 term)")


def _check_train_loop_case(train_loop: Callable, seed: int, label: str, sae_cfg: SAEConfig,
                           options: dict[str, Any]) -> None:
    """One case of test_train_loop: the learner's loop and train_sae on the same batches."""
    ex = "train_loop"
    n_steps = (30, 24, 36)[seed]
    batches = _loop_data(seed, n_steps, 64, sae_cfg.d_in)
    train_cfg = TrainConfig(n_steps=n_steps, init_b_dec=None, log_every=1, progress=False,
                            **options)
    reference = SAE(sae_cfg, seed=seed)
    result = train_sae(reference, [b.clone() for b in batches], train_cfg)
    yours = SAE(sae_cfg, seed=seed)
    given = [b.clone() for b in batches]

    def schedule(step: int, _cfg: TrainConfig = train_cfg) -> tuple[float, float]:
        return _cfg.lr_at(step), _cfg.sparsity_factor_at(step)

    losses = call(ex, train_loop, yours, iter(given), n_steps, schedule)
    for before, after in zip(batches, given, strict=True):
        _unchanged(before, after, ex, "a batch of activations")
    size = f" of length {len(losses)}" if hasattr(losses, "__len__") else ""
    require(isinstance(losses, list | tuple) and len(losses) == n_steps, ex,
            f"return the list of the {n_steps} losses, one per step (got "
            f"{type(losses).__name__}{size}).")
    got = _floats(losses, ex, "the losses")
    expected = torch.tensor(result.series("loss"), dtype=torch.float64)
    if not torch.allclose(got[:1], expected[:1], rtol=1e-4, atol=1e-5):
        raise CheckFailed(
            f"{ex}: on {label}, the loss of the very first batch is {got[0]:.5g}, expected "
            f"{expected[0]:.5g}. The loss is the MSE term, plus the sparsity term ('l1' or "
            "'l0') times the sparsity factor, plus any other term (TopK's 'aux') as it is.")
    if sae_cfg.l1_variant == "unit_norm" and sae_cfg.architecture == "relu":
        norms = yours.W_dec.detach().norm(dim=-1)
        require(torch.allclose(norms, torch.ones_like(norms), atol=1e-4), ex,
                f"on {label} the decoder rows end with norms {norms.min():.3f} to "
                f"{norms.max():.3f}, not 1: call sae.before_optimizer_step() before and "
                "sae.after_optimizer_step() after optimizer.step().")
    require(bool((yours.tokens_since_fired > 0).any()), ex,
            f"on {label} the SAE's dead-latent tracker never moved: call "
            "sae.record_firing(out.fired(), n_tokens) after every step, or no latent ever "
            "counts as dead (and TopK's AuxK loss never trains one).")
    if not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        first = int((~torch.isclose(got, expected, rtol=1e-4, atol=1e-5)).nonzero()[0])
        raise CheckFailed(
            f"{ex}: on {label}, the losses agree for the first {first} step(s) and then "
            f"differ (step {first}: yours {got[first]:.5g}, expected {expected[first]:.5g}). "
            "Check the update: optimizer.zero_grad() before loss.backward(), and the "
            "learning rate from schedule(step) set on every param group at every step.")
    for name, value in reference.state_dict().items():
        compare(yours.state_dict()[name], value, exercise=ex, rtol=1e-4, atol=1e-5,
                what=f"{name} after {n_steps} steps on {label}")


# ---------------------------------------------------------------- folding the normalisation


def _random_sae(cfg: SAEConfig, seed: int, dtype: torch.dtype = torch.float32) -> SAE:
    """An SAE with non-zero biases (and thresholds), so no term can hide."""
    sae = SAE(cfg, seed=seed, dtype=dtype)
    g = seeded_generator(seed)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(cfg.d_in, generator=g))
        sae.b_enc.copy_(torch.randn(cfg.d_sae, generator=g) * 0.3)
        sae.W_dec.mul_(1 + torch.rand(cfg.d_sae, 1, generator=g).to(dtype))
        if cfg.architecture == "jumprelu":
            sae.threshold.copy_(torch.rand(cfg.d_sae, generator=g) * 0.5)
    return sae.eval()


def test_fold_scale(fold_scale: Callable) -> None:
    ex = "fold_scale"
    cases = [
        (SAEConfig(d_in=12, d_sae=30, architecture="relu"), 0.07, torch.float32),
        (SAEConfig(d_in=12, d_sae=30, architecture="topk", k=4), 3.2, torch.float32),
        (SAEConfig(d_in=8, d_sae=20, architecture="jumprelu"), 0.5, torch.float32),
        (SAEConfig(d_in=8, d_sae=16, architecture="relu", apply_b_dec_to_input=False), 12.0,
         torch.float32),
        (SAEConfig(d_in=6, d_sae=10, architecture="topk", k=2), 0.2, torch.float64),
    ]
    for seed, (cfg, scale, dtype) in enumerate(cases):
        sae = _random_sae(cfg, seed, dtype)
        before = {k: v.clone() for k, v in sae.state_dict().items()}
        x_raw = torch.randn(40, cfg.d_in, generator=seeded_generator(50 + seed), dtype=dtype)
        x_raw = x_raw * 3 / scale
        folded = call(ex, fold_scale, sae, scale)
        require(isinstance(folded, SAE), ex, f"return an SAE, got {type(folded).__name__}.")
        for name, value in before.items():
            require(torch.equal(value, sae.state_dict()[name]), ex,
                    f"the SAE you were given changed ({name}): fold the scale into a copy "
                    "(copy.deepcopy(sae)) and return that.")
        require(folded.dtype == dtype, ex,
                f"the folded SAE is {folded.dtype}, the original {dtype}: keep its dtype.")
        expected = copy.deepcopy(sae)
        acts_ref.fold_scale_into_sae(expected, scale)
        what = f"the folded SAE ({cfg.architecture}, scale {scale})"
        with torch.no_grad():
            compare(folded.encode(x_raw), sae.encode(acts_ref.normalize(x_raw, scale)),
                    exercise=ex, rtol=1e-4, atol=1e-5,
                    what=f"the latents of raw activations under {what} (they should equal the "
                         "original SAE's latents of the normalised activations)",
                    mistakes={"you scaled b_enc as well (it must not change)": _with(
                        expected, b_enc=expected.b_enc * scale).encode(x_raw),
                        "you divided W_enc by the scale instead of multiplying": _with(
                            expected, W_enc=sae.W_enc / scale).encode(x_raw)})
            compare(folded(x_raw).x_hat, acts_ref.unnormalize(
                        sae(acts_ref.normalize(x_raw, scale)).x_hat, scale),
                    exercise=ex, rtol=1e-4, atol=1e-5,
                    what=f"the reconstruction of raw activations under {what} (it should be "
                         "the original's reconstruction, unnormalised)",
                    mistakes={"b_dec was not divided by the scale": _with(
                        expected, b_dec=sae.b_dec)(x_raw).x_hat,
                        "you multiplied W_dec by the scale instead of dividing": _with(
                            expected, W_dec=sae.W_dec * scale)(x_raw).x_hat})
            for name, value in expected.state_dict().items():
                compare(folded.state_dict()[name], value, exercise=ex, rtol=1e-5, atol=1e-6,
                        what=f"{name} of {what}")
    passed(ex, f"raw activations give the original latents and unnormalised reconstructions "
               f"on {len(cases)} SAEs (ReLU, TopK, JumpReLU, float64); the original untouched")


def _with(sae: SAE, **tensors: Tensor) -> SAE:
    """A copy of `sae` with some tensors replaced (a known mistake's SAE)."""
    out = copy.deepcopy(sae)
    with torch.no_grad():
        for name, value in tensors.items():
            getattr(out, name).copy_(value)
    return out


# ---------------------------------------------------------------- the splice hook


def _hook_count(model: Any) -> int:
    points = {id(hp): hp for hp in model.hook_dict.values()}
    return sum(len(hp.fwd_hooks) for hp in points.values())


def _splice_tokens(model: Any, seed: int, batch: int, pos: int) -> Tensor:
    """Real contexts, with a document separator mid-context and one row not led by BOS."""
    bos = text.bos_id_of(model.tokenizer)
    tokens = text.contexts_for_model(model, batch, pos, seed=seed, source="storyworld").clone()
    tokens[0, pos // 2] = bos
    if batch > 1:
        tokens[-1, 0] = tokens[-1, 1]
    return tokens


def _kept_everywhere_logits(model: Any, sae: SAE, tokens: Tensor, hook_name: str,
                            keep: Tensor) -> Tensor:
    """Logits when the positions in `keep` keep their activation (a mistake's answer)."""
    def hook(x: Tensor, hook: Any) -> Tensor:
        return torch.where(keep[..., None], x, sae.decode(sae.encode(x)))

    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook)])


def test_logits_with_sae(logits_with_sae: Callable) -> None:
    ex = "logits_with_sae"
    model = check_model()
    d = model.cfg.d_model
    n = model.cfg.n_layers
    cases = [
        ("blocks.2.hook_resid_pre", SAEConfig(d_in=d, d_sae=4 * d, architecture="topk", k=8),
         3, 16),
        ("blocks.1.hook_resid_pre", SAEConfig(d_in=d, d_sae=2 * d, architecture="relu"), 2, 9),
        (f"blocks.{n - 1}.hook_resid_post",
         SAEConfig(d_in=d, d_sae=d, architecture="topk", k=4), 1, 6),
    ]
    bos = text.bos_id_of(model.tokenizer)
    for seed, (hook_name, cfg, batch, pos) in enumerate(cases):
        sae = _random_sae(cfg, seed)
        tokens = _splice_tokens(model, seed, batch, pos)
        weights = {k: v.clone() for k, v in sae.state_dict().items()}
        given = tokens.clone()
        passes: list[int] = []
        counter = model.hook_dict["hook_embed"].register_forward_hook(
            lambda *args, _passes=passes: _passes.append(1))
        hooks_before = _hook_count(model)
        try:
            got = call(ex, logits_with_sae, model, sae, given, hook_name)
            left_behind = _hook_count(model) - hooks_before
        finally:
            counter.remove()
            model.reset_hooks(including_permanent=True)
        require(left_behind <= 0, ex,
                f"{left_behind} hook(s) stayed on the model after your function returned, so "
                "every later forward pass would still run your splice. Use "
                "model.run_with_hooks(tokens, fwd_hooks=[...]) (or `with model.hooks(...)`), "
                "which removes its hooks; model.add_hook keeps them until model.reset_hooks().")
        require(len(passes) == 1, ex,
                f"your function ran {len(passes)} forward passes of the model; one is enough "
                "(the hook computes the reconstruction from the activation it is given).")
        _unchanged(tokens, given, ex, "the tokens")
        for name, value in weights.items():
            _unchanged(value, sae.state_dict()[name], ex, f"the SAE's {name}")
        with torch.no_grad():
            splice = Splice(model, sae, hook_name)
            expected = model.run_with_hooks(tokens, fwd_hooks=splice.fwd_hooks)
            every_bos = _kept_everywhere_logits(model, sae, tokens, hook_name, tokens == bos)
            first_column = torch.zeros_like(tokens, dtype=torch.bool)
            first_column[:, 0] = True
            position_zero = _kept_everywhere_logits(model, sae, tokens, hook_name, first_column)
            all_spliced = model.run_with_hooks(
                tokens, fwd_hooks=Splice(model, sae, hook_name, skip_bos=False).fwd_hooks)
            clean = model(tokens)
        compare(got, expected, exercise=ex, rtol=1e-4, atol=1e-4,
                what=f"the logits with the SAE spliced in at {hook_name} (tokens "
                     f"{tuple(tokens.shape)})",
                mistakes={
                    "the BOS position was replaced too (leave position 0 untouched where it "
                    "holds BOS)": all_spliced,
                    "every BOS token kept its activation, also the document separators inside a "
                    "context (only position 0 is BOS)": every_bos,
                    "position 0 was kept in every context, also one that does not start with "
                    "BOS": position_zero,
                    "the output is the clean model's: the activation was not replaced (or the "
                    "error term was added back)": clean,
                })
    passed(ex, f"logits match the library's splice at {len(cases)} hooks: BOS at position 0 "
               "untouched, separators spliced, one forward pass, no hook left behind")


# ---------------------------------------------------------------- CE gap and CE-loss recovered


CE_KEYS = ("ce_clean", "ce_sae", "ce_zero", "ce_gap", "ce_recovered")


def _ce_case(seed: int, batch: int, pos: int, vocab: int, bos: int) -> tuple[Tensor, ...]:
    g = seeded_generator(seed)
    clean = torch.randn(batch, pos, vocab, generator=g) * 3
    sae = clean + torch.randn(batch, pos, vocab, generator=g) * 0.7
    zero = torch.randn(batch, pos, vocab, generator=g)
    tokens = torch.randint(1, vocab, (batch, pos), generator=g)
    tokens[:, 0] = bos
    if pos > 3:
        tokens[0, pos // 2] = bos  # a document separator: its prediction counts
    if batch > 1:
        tokens[-1, 0] = 3  # a context that does not start with BOS
    return clean, sae, zero, tokens


def _ce(logits: Tensor, tokens: Tensor, predicted: Tensor) -> Tensor:
    return ev.next_token_loss(logits, tokens)[predicted].double().mean()


def test_ce_metrics(ce_metrics: Callable) -> None:
    ex = "ce_metrics"
    cases = [(0, 4, 12, 20, 0), (1, 1, 3, 5, 1), (2, 3, 7, 50, 4)]  # seed, shape, BOS id
    for seed, batch, pos, vocab, bos in cases:
        clean, sae, zero, tokens = _ce_case(seed, batch, pos, vocab, bos)
        inputs = [clean, sae, zero, tokens]
        copies = [t.clone() for t in inputs]
        got = call(ex, ce_metrics, *copies, bos)
        for before, after in zip(inputs, copies, strict=True):
            _unchanged(before, after, ex, "an input")
        require(isinstance(got, dict) and set(CE_KEYS) <= set(got), ex,
                f"return a dict with the keys {list(CE_KEYS)}, got "
                f"{sorted(got) if isinstance(got, dict) else type(got).__name__}.")
        predicted = ~bos_mask(tokens, bos)[:, :-1]
        everything = torch.ones_like(predicted)
        no_bos_tokens = tokens[:, :-1] != bos
        ce = {k: _ce(v, tokens, predicted) for k, v in
              (("ce_clean", clean), ("ce_sae", sae), ("ce_zero", zero))}
        unshifted = {k: -v.float().log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
                     [:, :-1][predicted].double().mean()
                     for k, v in (("ce_clean", clean), ("ce_sae", sae), ("ce_zero", zero))}
        gap = ce["ce_sae"] - ce["ce_clean"]
        recovered = torch.tensor(ev.ce_loss_recovered(*(float(ce[k]) for k in CE_KEYS[:3])),
                                 dtype=torch.float64)
        expected = {**ce, "ce_gap": gap, "ce_recovered": recovered}
        where = f"(tokens {tuple(tokens.shape)})"
        for key in CE_KEYS[:3]:
            logits = {"ce_clean": clean, "ce_sae": sae, "ce_zero": zero}[key]
            compare(_floats([got[key]], ex, key)[0], expected[key], exercise=ex,
                    what=f"{key} {where}", rtol=1e-4, atol=1e-5, mistakes={
                        "logits[:, t] were scored against tokens[:, t] (the prediction at t is "
                        "of token t + 1)": unshifted[key],
                        "the prediction made at the BOS position was counted":
                            _ce(logits, tokens, everything),
                        "every BOS token's prediction was dropped, also those at document "
                        "separators (only position 0 is BOS)":
                            _ce(logits, tokens, no_bos_tokens & predicted),
                    })
        compare(_floats([got["ce_gap"]], ex, "ce_gap")[0], gap, exercise=ex,
                what=f"ce_gap {where}", rtol=1e-4, atol=1e-5,
                mistakes={"the gap's sign is reversed (it is CE with the SAE minus CE clean)":
                          -gap})
        compare(_floats([got["ce_recovered"]], ex, "ce_recovered")[0], recovered, exercise=ex,
                what=f"ce_recovered {where}", rtol=1e-4, atol=1e-5, mistakes={
                    "you computed the fraction lost, (CE_sae - CE_clean) / (CE_zero - CE_clean),"
                    " not the fraction recovered": 1 - recovered,
                    "the fraction is upside down, (CE_zero - CE_clean) / (CE_zero - CE_sae)":
                        (ce["ce_zero"] - ce["ce_clean"]) / (ce["ce_zero"] - ce["ce_sae"]),
                })
    bos = 0
    clean, _, zero, tokens = _ce_case(7, 2, 6, 9, bos)
    got = call(ex, ce_metrics, clean, clean.clone(), zero, tokens, bos)
    compare(_floats([got["ce_gap"], got["ce_recovered"]], ex, "the metrics"),
            torch.tensor([0.0, 1.0], dtype=torch.float64), exercise=ex, atol=1e-6,
            what="(ce_gap, ce_recovered) when the SAE's logits equal the clean ones")
    passed(ex, "CE clean / SAE / zero, the gap and CE-loss recovered match on 3 cases (BOS "
               "prediction left out, separators kept, 3 BOS ids) and a perfect SAE gives (0, 1)")


# ---------------------------------------------------------------- KL divergence


def test_kl_per_token(kl_per_token: Callable) -> None:
    ex = "kl_per_token"
    for seed, (shape, spread, dtype) in enumerate([
        ((2, 5, 30), 2.0, torch.float32), ((1, 1, 7), 1.0, torch.float32),
        ((3, 4, 100), 40.0, torch.float32), ((2, 3, 16), 3.0, torch.float16),
    ]):
        g = seeded_generator(seed)
        p = (torch.randn(*shape, generator=g) * spread).to(dtype)
        q = (p.float() + torch.randn(*shape, generator=g) * spread * 0.3).to(dtype)
        q = q + 1000.0 if dtype == torch.float32 and seed == 0 else q  # logits shift freely
        p_in, q_in = p.clone().requires_grad_(), q.clone().requires_grad_()
        got = call(ex, kl_per_token, p_in, q_in)
        _unchanged(p, p_in.detach(), ex, "logits_clean")
        _unchanged(q, q_in.detach(), ex, "logits_sae")
        expected = ev.kl_divergence(p, q)
        log_p, log_q = p.float().log_softmax(-1), q.float().log_softmax(-1)
        what = f"the KL per token for logits {shape} ({dtype})"
        require(isinstance(got, Tensor) and got.dtype in (torch.float32, torch.float64), ex,
                f"the KL of {dtype} logits came back as "
                f"{got.dtype if isinstance(got, Tensor) else type(got).__name__}; compute it "
                "in float32 (logits.float()) so that low-precision logits give accurate values.")
        compare(got, expected, exercise=ex, what=what, rtol=1e-3, atol=1e-5, mistakes={
            "you computed KL(p_sae || p_clean): the order is reversed":
                ev.kl_divergence(q, p),
            "you averaged over the vocabulary instead of summing":
                (log_p.exp() * (log_p - log_q)).mean(-1),
            "you used probabilities where log-probabilities belong":
                (log_p.exp() * (log_p.exp() - log_q.exp())).sum(-1),
        })
        require(torch.is_grad_enabled() and got.requires_grad, ex,
                "the KL has no gradient; KL can be a training loss, so compute it with "
                "differentiable torch operations (no .detach(), .item() or numpy).")
        got.sum().backward()
        p_ref, q_ref = p.clone().requires_grad_(), q.clone().requires_grad_()
        ev.kl_divergence(p_ref, q_ref).sum().backward()
        compare(q_in.grad, q_ref.grad, exercise=ex, rtol=1e-3, atol=1e-5,
                what=f"the gradient of the summed KL with respect to logits_sae ({shape})")
        compare(p_in.grad, p_ref.grad, exercise=ex, rtol=1e-3, atol=1e-5,
                what=f"the gradient of the summed KL with respect to logits_clean ({shape})")
    same = torch.randn(2, 3, 11, generator=seeded_generator(9))
    compare(call(ex, kl_per_token, same, same.clone()), torch.zeros(2, 3), exercise=ex,
            atol=1e-6, what="the KL between identical logits")
    passed(ex, "KL(clean || SAE) per token and its gradients match on 4 cases (shifted and "
               "peaked logits, float16 in, float32 out); 0 for identical logits")


# ---------------------------------------------------------------- firing density


def _latents_case(seed: int) -> Tensor:
    """[200, 50] latents: per-latent firing rates from never to always, one at exactly 10%."""
    g = seeded_generator(seed)
    rates = torch.rand(50, generator=g) ** 3
    rates[:5] = 0.0
    rates[5] = 1.0
    fires = torch.rand(200, 50, generator=g) < rates
    fires[:, 6] = False
    fires[:20, 6] = True  # exactly 10%: not dense
    fires[:, 7] = False
    fires[:21, 7] = True  # just over 10%: dense
    return fires * torch.rand(200, 50, generator=g) * 3


def test_firing_stats(firing_stats: Callable) -> None:
    ex = "firing_stats"
    g = seeded_generator(3)
    cases = [
        (_latents_case(0), 0.1),
        (_latents_case(1).reshape(8, 25, 50), 0.1),
        (_latents_case(2), 0.25),
        (torch.zeros(10, 8), 0.1),
        (torch.relu(torch.randn(1, 6, generator=g)), 0.5),
    ]
    for latents, threshold in cases:
        given = latents.clone()
        out = call(ex, firing_stats, given, threshold)
        _unchanged(latents, given, ex, "the latents")
        require(isinstance(out, tuple) and len(out) == 3, ex,
                f"return a tuple (density, n_dead, n_dense), got {out!r}.")
        density, n_dead, n_dense = out
        flat = latents.reshape(-1, latents.shape[-1])
        expected = ev.firing_frequency(latents)
        what = f"the density of latents {tuple(latents.shape)}"
        compare(density, expected, exercise=ex, what=what, mistakes={
            "you counted the tokens each latent fires on, not the fraction":
                (flat != 0).float().sum(0),
            "you averaged over the latents (a density per token) instead of over the tokens":
                (flat != 0).float().mean(-1),
            "you averaged only over the first dimension of [batch, pos, d_sae] latents; "
            "flatten every dimension but the last first": (latents != 0).float().mean(0),
            "you averaged the latents' values, not whether they are non-zero": flat.mean(0),
        })
        require(density.dtype.is_floating_point, ex,
                f"the density should be a float tensor (a fraction), got {density.dtype}.")
        counts = _floats([n_dead, n_dense], ex, "n_dead and n_dense")
        want = torch.tensor([int((expected == 0).sum()), int((expected > threshold).sum())],
                            dtype=torch.float64)
        compare(counts, want, exercise=ex, atol=0,
                what=f"(n_dead, n_dense) of latents {tuple(latents.shape)} with dense "
                     f"threshold {threshold}",
                mistakes={
                    "dense uses >= instead of > (a latent on exactly 10% of tokens is not dense)":
                        torch.tensor([want[0], float((expected >= threshold).sum())],
                                     dtype=torch.float64),
                    "you returned fractions of the latents instead of counts":
                        want / latents.shape[-1],
                })
    passed(ex, "densities, dead and dense counts match on 5 cases (a tie at the threshold, "
               "[batch, pos, d_sae] input, all zeros, one token)")


# ---------------------------------------------------------------- diagnosing broken runs


def test_diagnosis(diagnosis: dict[str, str]) -> None:
    ex = "diagnosis"
    runs = load_broken_runs()
    require(isinstance(diagnosis, dict), ex,
            f"diagnosis should be a dict {{run name: choice}}, got {type(diagnosis).__name__}.")
    missing = sorted(set(runs) - set(diagnosis))
    require(not missing, ex, f"diagnose every run; missing: {missing}.")
    unknown = sorted(set(diagnosis) - set(runs))
    require(not unknown, ex, f"there is no run called {unknown}; the runs are {sorted(runs)}.")
    for name, choice in diagnosis.items():
        require(choice in DIAGNOSES, ex,
                f"{name}: {choice!r} is not one of the choices {sorted(DIAGNOSES)}.")
    wrong = sorted(name for name, choice in diagnosis.items()
                   if not runs[name].is_diagnosis(choice))
    require(not wrong, ex,
            f"{len(wrong)} of {len(runs)} diagnoses are not right: {', '.join(wrong)}. Look "
            "again at those runs' curves beside the healthy-looking ones: the scale of the "
            "loss, where L0 sits, how explained variance and the dead fraction move, and how "
            "the SAE does in the model (the numbers on the right of each row).")
    passed(ex, f"all {len(runs)} runs diagnosed correctly")
