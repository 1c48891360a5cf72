"""Checks for notebook 01, toy models of superposition.

Each `test_<exercise>` compares the learner's code with `sae_course.toy_models` on seeded
random inputs and edge cases; stochastic exercises are compared exactly under the same
generator seed *and* on their statistics, so a plausible-but-wrong sampler fails with a
message about what it gets wrong.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor

from sae_course import toy_models as tm
from sae_course.checks.harness import CheckFailed, call, compare, passed, require, seeded_generator
from sae_course.settings import cpu_threads

# --------------------------------------------------------------------------- helpers


def _model_with_weights(exercise: str, model_cls, n_features, d_hidden, n_inst, W, b):
    model = call(exercise, model_cls, n_features=n_features, d_hidden=d_hidden, n_inst=n_inst)
    for name, shape in (("W", W.shape), ("b_final", b.shape)):
        param = getattr(model, name, None)
        require(
            isinstance(param, torch.nn.Parameter), exercise,
            f"the model needs a parameter `{name}` (keep the __init__ as given).",
        )
        require(
            tuple(param.shape) == tuple(shape), exercise,
            f"`{name}` has shape {tuple(param.shape)}, expected {tuple(shape)} for "
            f"n_features={n_features}, d_hidden={d_hidden}, n_inst={n_inst}.",
        )
    with torch.no_grad():
        model.W.copy_(W)
        model.b_final.copy_(b)
    return model


def _kept(**tensors: Tensor) -> dict[str, Tensor]:
    """Copies of the inputs given to the learner's code, to catch in-place changes."""
    return {name: t.detach().clone() for name, t in tensors.items()}


def _unchanged(exercise: str, kept: dict[str, Tensor], **given: Tensor) -> None:
    """Fail when the learner's code changed one of its input tensors in place."""
    for name, t in given.items():
        before = kept[name]
        if t.shape != before.shape or not torch.equal(t.detach(), before):
            raise CheckFailed(
                f"{exercise}: your code changed its input `{name}` in place (shape "
                f"{tuple(before.shape)} -> {tuple(t.shape)}, or its values). The caller still "
                "needs it: build new tensors (x = x * 2, x.unsqueeze(0)) instead of in-place "
                "operations (x *= 2, x.unsqueeze_(0), x.pow_(2), or writing into an alias)."
            )


def _require_dtype(exercise: str, result, dtype: torch.dtype, what: str) -> None:
    if torch.is_tensor(result):
        require(result.dtype == dtype, exercise,
                f"{what} has dtype {result.dtype}, but for {dtype} inputs it should be "
                f"{dtype}: keep the inputs' dtype (no .float(), no torch.tensor(...) rebuilt "
                "from a Python number, no new tensors without dtype=...).")


_SHAPES = [  # (n_inst, d_hidden, n_features, batch): one square case so transposes run
    (3, 2, 5, 7),
    (2, 4, 6, 1),
    (2, 3, 3, 5),
]


def _check_forward(model_cls, exercise: str, reference, mistakes_of) -> None:
    for seed, (n_inst, d_hidden, n_features, n_batch) in enumerate(_SHAPES):
        g = seeded_generator(seed)
        W = torch.randn((n_inst, d_hidden, n_features), generator=g)
        b = torch.randn((n_inst, n_features), generator=g) * 0.5
        x = torch.rand((n_batch, n_inst, n_features), generator=g)
        x = x * (torch.rand(x.shape, generator=g) < 0.6)  # sparse-ish, with zeros
        model = _model_with_weights(exercise, model_cls, n_features, d_hidden, n_inst, W, b)
        kept = _kept(features=x)
        out = call(exercise, model, x)
        _unchanged(exercise, kept, features=x)  # before x feeds the reference below
        compare(out, reference(W, b, x), exercise=exercise,
                what=f"the output for n_inst={n_inst}, d_hidden={d_hidden}, "
                     f"n_features={n_features}", mistakes=mistakes_of(W, b, x))
    # edge case: no feature present -> the output is ReLU(b)
    W = torch.randn((2, 2, 5), generator=seeded_generator(10))
    b = torch.tensor([[0.3, -0.2, 0.0, 1.0, -1.0], [-0.5, 0.5, 0.1, -0.1, 0.2]])
    model = _model_with_weights(exercise, model_cls, 5, 2, 2, W, b)
    zeros = torch.zeros((3, 2, 5))
    compare(call(exercise, model, zeros), reference(W, b, zeros), exercise=exercise,
            what="the output for an all-zero batch (should be ReLU(b_final))",
            mistakes=mistakes_of(W, b, zeros))
    # gradients: the output feeds training, so backward must reach W and b_final as the
    # reference's does (a stray .detach() or torch.no_grad() gives the same forward values)
    g = seeded_generator(20)
    W = torch.randn((2, 3, 4), generator=g)
    b = torch.randn((2, 4), generator=g) * 0.5 + 0.5  # mostly positive: gradients flow
    x = torch.rand((6, 2, 4), generator=g)
    weights = torch.randn((6, 2, 4), generator=g)
    model = _model_with_weights(exercise, model_cls, 4, 3, 2, W, b)
    kept = _kept(features=x)
    out = call(exercise, model, x)
    _unchanged(exercise, kept, features=x)
    require(torch.is_tensor(out) and out.requires_grad, exercise,
            "your output carries no gradient, so training could not change W or b_final: "
            "is there a .detach(), .data or torch.no_grad() in forward?")
    call(exercise, lambda: (out * weights).sum().backward())
    W_ref, b_ref = W.clone().requires_grad_(), b.clone().requires_grad_()
    (reference(W_ref, b_ref, x) * weights).sum().backward()
    for name, ref in (("W", W_ref), ("b_final", b_ref)):
        grad = getattr(model, name).grad
        require(grad is not None, exercise,
                f"backward through your output gives `{name}` no gradient: it must take part "
                "in the computation (not detached).")
        compare(grad, ref.grad, exercise=exercise,
                what=f"the gradient of {name} (backward through your forward pass; a "
                     ".detach() on one use of W gives the right output but the wrong gradient)")
    # dtype: a float64 model on float64 features gives a float64 output
    model = _model_with_weights(exercise, model_cls, 4, 3, 2, W, b).double()
    out = call(exercise, model, x.double())
    _require_dtype(exercise, out, torch.float64, "the output")
    compare(out, reference(W.double(), b.double(), x.double()), exercise=exercise,
            what="the output of a float64 model")


# --------------------------------------------------------------------------- forward


def _hidden(W, x):
    return torch.einsum("ihf,bif->bih", W, x)


def test_toy_model_forward(model_cls) -> None:
    """The learner's ToyModel class: forward(features) = ReLU(W^T W x + b)."""
    ex = "toy_model_forward"

    def mistakes(W, b, x):
        h = _hidden(W, x)
        pre = torch.einsum("ihf,bih->bif", W, h)
        return {
            "the final ReLU is missing": pre + b,
            "the bias b_final is left out": torch.relu(pre),
            "there is a ReLU on the hidden layer too (that is the neuron model)":
                tm.neuron_forward(W, b, x),
            "the ReLU is applied before adding the bias": torch.relu(pre) + b,
        }

    _check_forward(model_cls, ex, tm.toy_forward, mistakes)
    passed(ex, "same outputs as the reference (random weights, three shapes, an all-zero batch), "
               "same gradients for W and b_final, float64 kept, input left unchanged.")


def test_neuron_model_forward(model_cls) -> None:
    """The learner's NeuronModel class: h = ReLU(W x), out = ReLU(W^T h + b)."""
    ex = "neuron_model_forward"

    def mistakes(W, b, x):
        h = _hidden(W, x)
        return {
            "the hidden ReLU is missing (that is the plain toy model)": tm.toy_forward(W, b, x),
            "the output ReLU is missing":
                torch.einsum("ihf,bih->bif", W, torch.relu(h)) + b,
            "the bias b_final is left out":
                torch.relu(torch.einsum("ihf,bih->bif", W, torch.relu(h))),
        }

    _check_forward(model_cls, ex, tm.neuron_forward, mistakes)
    passed(ex, "same outputs as the reference (random weights, three shapes, an all-zero batch), "
               "same gradients for W and b_final, float64 kept, input left unchanged.")


# --------------------------------------------------------------------------- batches


def _as_tensor(exercise: str, x, what: str) -> Tensor:
    require(torch.is_tensor(x), exercise, f"{what} should be a torch.Tensor, got "
            f"{type(x).__name__}.")
    return x


def _frequency_check(exercise: str, present: Tensor, expected: Tensor, what: str) -> None:
    """present: bool [n, ...]; expected: probability table [...]."""
    n = present.shape[0]
    freq = present.double().mean(0)
    tol = 5 * torch.sqrt(expected.double() * (1 - expected.double()) / n) + 2e-3
    bad = (freq - expected.double()).abs() > tol
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise CheckFailed(
            f"{exercise}: {what} {idx} is non-zero in {freq[idx].item():.3f} of the batch, "
            f"but it should be present with probability {expected[idx].item():.3f}."
        )


def _value_check(exercise: str, batch: Tensor) -> None:
    require(bool((batch >= 0).all() and (batch <= 1).all()), exercise,
            f"feature values must lie in [0, 1]; yours range from {batch.min().item():.3g} "
            f"to {batch.max().item():.3g} (use torch.rand, not torch.randn).")
    nz = batch[batch > 0].double()
    require(nz.numel() > 1000, exercise, "almost no feature is ever present.")
    mean, std = nz.mean().item(), nz.std().item()
    require(abs(mean - 0.5) < 0.02 and abs(std - math.sqrt(1 / 12)) < 0.02, exercise,
            f"present features should be uniform on [0, 1] (mean 0.5, std 0.289); yours have "
            f"mean {mean:.3f} and std {std:.3f}. Draw the values and the mask separately.")


def test_generate_batch(generate_batch: Callable) -> None:
    """generate_batch(n_batch, feature_probability [n_inst, n_features], generator)."""
    ex = "generate_batch"
    p = torch.tensor([[0.05, 0.2, 0.5, 1.0], [0.0, 0.3, 0.7, 0.9], [0.5, 0.5, 0.5, 0.5]])
    n = 20000
    kept = _kept(feature_probability=p)
    batch = _as_tensor(ex, call(ex, generate_batch, n, p, seeded_generator(2024)), "the batch")
    _unchanged(ex, kept, feature_probability=p)
    require(tuple(batch.shape) == (n, 3, 4), ex,
            f"the batch should have shape (n_batch, n_inst, n_features) = {(n, 3, 4)}, got "
            f"{tuple(batch.shape)}.")
    _value_check(ex, batch)
    _frequency_check(ex, batch > 0, p, "feature (instance, feature)")
    # independence: features should not switch on together
    present = (batch[:, 2] > 0).double()
    cov = torch.cov(present.T)
    off = (cov - torch.diag(torch.diag(cov))).abs().max().item()
    require(off < 0.02, ex, f"features should be present independently of each other, but "
            f"their presence is correlated (covariance up to {off:.3f}): draw one mask value "
            "per feature, not one per example.")
    # exact: same generator seed -> same numbers as the reference
    for seed, shape in enumerate([(3, 5), (1, 1), (2, 7)]):
        q = torch.rand(shape, generator=seeded_generator(100 + seed))
        q[0, 0] = 1.0
        n_batch = [16, 1, 9][seed]
        kept = _kept(feature_probability=q)
        batch = call(ex, generate_batch, n_batch, q, seeded_generator(seed))
        _unchanged(ex, kept, feature_probability=q)
        mine = _as_tensor(ex, batch, "the batch")
        g = seeded_generator(seed)
        mask_first = torch.rand((n_batch, *shape), generator=g) < q
        values_second = torch.rand((n_batch, *shape), generator=g)
        compare(
            mine, tm.generate_batch(n_batch, q, seeded_generator(seed)), exercise=ex,
            what=f"the batch for seed {seed} (your statistics are right, so this is about the "
                 "order of random draws: values first, then the mask, each one torch.rand call "
                 "of shape (n_batch, n_inst, n_features) with generator=generator)",
            atol=0, rtol=0,
            mistakes={"the mask is drawn before the values": values_second * mask_first},
        )
    passed(ex, "right statistics (frequency p, uniform values, independent features), the "
               "same numbers as the reference under three seeds and shapes, input unchanged.")


def test_generate_anticorrelated_batch(generate_anticorrelated_batch: Callable) -> None:
    """generate_anticorrelated_batch(n_batch, feature_probability [n_inst, n_pairs], generator)."""
    ex = "generate_anticorrelated_batch"
    p = torch.tensor([[0.05, 0.2, 0.5], [0.1, 0.3, 0.0]])
    n = 20000
    kept = _kept(feature_probability=p)
    batch = _as_tensor(ex, call(ex, generate_anticorrelated_batch, n, p, seeded_generator(2024)),
                       "the batch")
    _unchanged(ex, kept, feature_probability=p)
    require(tuple(batch.shape) == (n, 2, 6), ex,
            f"the batch should have shape (n_batch, n_inst, 2 * n_pairs) = {(n, 2, 6)}, got "
            f"{tuple(batch.shape)}.")
    _value_check(ex, batch)
    present = batch > 0
    both = (present[..., 0::2] & present[..., 1::2]).any().item()
    require(not both, ex, "features 2k and 2k+1 (a pair) are sometimes both present; at most "
            "one of a pair may be. (Interleave the pair's masks: stack on a new last "
            "dimension, then flatten.)")
    _frequency_check(ex, present, p.repeat_interleave(2, dim=-1), "feature (instance, feature)")
    for seed, shape in enumerate([(3, 2), (1, 1), (2, 4)]):
        q = torch.rand(shape, generator=seeded_generator(100 + seed)) * 0.5
        n_batch = [16, 1, 9][seed]
        kept = _kept(feature_probability=q)
        batch = call(ex, generate_anticorrelated_batch, n_batch, q, seeded_generator(seed))
        _unchanged(ex, kept, feature_probability=q)
        mine = _as_tensor(ex, batch, "the batch")
        compare(
            mine, tm.generate_anticorrelated_batch(n_batch, q, seeded_generator(seed)), exercise=ex,
            what=f"the batch for seed {seed} (your statistics are right, so check the order of "
                 "random draws: values (n_batch, n_inst, 2*n_pairs), then pair activity, then "
                 "the coin (each (n_batch, n_inst, n_pairs)), all with generator=generator; the "
                 "first of a pair is present when the coin is < 0.5)",
            atol=0, rtol=0,
        )
    passed(ex, "at most one feature of each pair, marginal probability p, uniform values, the "
               "same numbers as the reference under three seeds and shapes, input unchanged.")


# --------------------------------------------------------------------------- loss


def test_importance_weighted_loss(loss_fn: Callable) -> None:
    """loss_fn(out, features, importance) -> scalar."""
    ex = "importance_weighted_loss"
    cases = [((8, 3, 5), (3, 5)), ((1, 2, 4), (4,)), ((6, 1, 3), (1, 3)), ((5, 4, 2), (4, 1))]
    for seed, (shape, imp_shape) in enumerate(cases):
        g = seeded_generator(seed)
        x = torch.rand(shape, generator=g)
        out = torch.rand(shape, generator=g)
        imp = torch.rand(imp_shape, generator=g) + 0.1
        kept = _kept(out=out, features=x, importance=imp)
        mine = call(ex, loss_fn, out, x, imp)
        _unchanged(ex, kept, out=out, features=x, importance=imp)
        if torch.is_tensor(mine):
            require(mine.ndim == 0, ex, f"the loss should be a scalar (0-d tensor), got shape "
                    f"{tuple(mine.shape)}: sum over instances as well.")
        err = (x - out) ** 2
        n_inst = shape[1]
        mistakes = {
            "the importance is not applied": err.mean(0).sum(),
            "the features are averaged instead of summed": (imp * err).mean(0).mean(-1).sum(),
            "the instances are averaged instead of summed": (imp * err).mean(0).sum(-1).mean(),
            "the batch is summed instead of averaged": (imp * err).sum(0).sum(),
            "the error is not squared": (imp * (x - out).abs()).mean(0).sum(),
            "the importance is squared": (imp**2 * err).mean(0).sum(),
            "everything is averaged (features and instances too)": (imp * err).mean(),
        }
        if n_inst == 1:
            mistakes.pop("the instances are averaged instead of summed")
        compare(mine, tm.importance_weighted_loss(out, x, imp), exercise=ex,
                what=f"the loss for out/features of shape {shape} and importance of shape "
                     f"{imp_shape}", mistakes=mistakes)
    x = torch.rand((4, 2, 3), generator=seeded_generator(9))
    compare(call(ex, loss_fn, x.clone(), x, torch.ones(2, 3)), torch.tensor(0.0), exercise=ex,
            what="the loss of a perfect reconstruction")
    # gradients: this loss trains the model, so d loss / d out must match the reference's
    g = seeded_generator(30)
    x = torch.rand((5, 3, 4), generator=g, dtype=torch.float64)
    out_value = torch.rand((5, 3, 4), generator=g, dtype=torch.float64)
    imp = torch.rand((3, 4), generator=g, dtype=torch.float64) + 0.1
    out = out_value.clone().requires_grad_()
    mine = call(ex, loss_fn, out, x, imp)
    _require_dtype(ex, mine, torch.float64, "the loss")
    require(torch.is_tensor(mine) and mine.requires_grad, ex,
            "the loss carries no gradient back to `out`, so it could not train anything: is "
            "there a .detach(), .item() or torch.no_grad() in it?")
    call(ex, mine.backward)
    out_ref = out_value.clone().requires_grad_()
    tm.importance_weighted_loss(out_ref, x, imp).backward()
    require(out.grad is not None, ex, "backward through your loss gives `out` no gradient.")
    compare(out.grad, out_ref.grad, exercise=ex, what="the gradient of the loss with respect to "
            "out", mistakes={"`out` is detached inside the loss": torch.zeros_like(out_ref.grad)})
    passed(ex, "same value as the reference (mean over batch, importance-weighted sum over "
               "features, sum over instances) for four shapes and broadcast importances; same "
               "gradient, float64 kept, inputs unchanged.")


# --------------------------------------------------------------------------- training


def _variant_optimize(model, make_batch, loss_fn, n_steps, lr, *, kind: str) -> Tensor:
    """Known-wrong training loops, to name the mistake."""
    if kind == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(n_steps):
        batch = make_batch()
        loss = loss_fn(model(batch), batch)
        if kind != "no_zero_grad":
            opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.detach())
    return torch.stack(history)


def _history(exercise: str, history, n_steps: int) -> Tensor:
    if torch.is_tensor(history):
        h = history.detach().double().reshape(-1)
    else:
        require(isinstance(history, list | tuple), exercise,
                f"return the list of losses, one per step; got {type(history).__name__}.")
        h = torch.tensor([float(v) for v in history], dtype=torch.float64)
    require(h.numel() == n_steps, exercise,
            f"the history should hold one loss per step ({n_steps}), it has {h.numel()}.")
    return h


def test_train(train: Callable) -> None:
    """train(model, make_batch, loss_fn, n_steps, lr) -> list of losses (Adam)."""
    with cpu_threads(1):  # tiny model: threads only slow it down (see settings.cpu_threads)
        _test_train(train)


def _test_train(train: Callable) -> None:
    ex = "train"
    n_steps, lr = 40, 1e-2
    p = torch.tensor([[1.0], [0.3], [0.1], [0.03]])
    importance = 0.9 ** torch.arange(5.0)
    base = tm.ToyModel(5, 2, n_inst=4, feature_probability=p, importance=importance, seed=3)

    def batches(seed):
        g = seeded_generator(seed)
        return lambda: tm.generate_batch(256, base.feature_probability, g)

    def loss_fn(out, x):
        return tm.importance_weighted_loss(out, x, importance)

    ref_model = copy.deepcopy(base)
    expected = tm.optimize(ref_model, batches(1), loss_fn, n_steps, lr)

    def mistakes() -> dict[str, Tensor]:  # only computed when the history differs
        def variant(kind):
            return _variant_optimize(copy.deepcopy(base), batches(1), loss_fn, n_steps, lr,
                                     kind=kind)
        return {
            "the gradients are never zeroed (call optimizer.zero_grad() every step)":
                variant("no_zero_grad"),
            "SGD is used instead of Adam": variant("sgd"),
            "the learning rate argument is ignored (Adam's default 1e-3 is used)":
                tm.optimize(copy.deepcopy(base), batches(1), loss_fn, n_steps, 1e-3),
        }

    learner_model = copy.deepcopy(base)
    history = _history(ex, call(ex, train, learner_model, batches(1), loss_fn, n_steps, lr),
                       n_steps)
    changed = not torch.equal(learner_model.W.detach(), base.W.detach())
    require(changed, ex, "the model's weights did not change: call loss.backward() and "
            "optimizer.step() every step, on an optimiser built from model.parameters().")
    early, late = history[:10].mean().item(), history[-10:].mean().item()
    require(late < early, ex, f"the loss did not go down (first 10 steps {early:.4f}, last 10 "
            f"{late:.4f}).")
    same = torch.allclose(history, expected.double(), atol=1e-5, rtol=1e-4)
    compare(history, expected.double(), exercise=ex,
            what="the loss history (one Adam step per batch, loss recorded before the step)",
            atol=1e-5, rtol=1e-4, mistakes=None if same else mistakes())
    compare(learner_model.W.detach(), ref_model.W.detach(), exercise=ex,
            what="the weights W after training", atol=1e-5, rtol=1e-4)
    compare(learner_model.b_final.detach(), ref_model.b_final.detach(), exercise=ex,
            what="the bias b_final after training (is it being optimised?)", atol=1e-5,
            rtol=1e-4)
    # every argument matters: another learning rate, step count, loss and data stream
    n_steps2, lr2 = 25, 3e-3
    importance2 = torch.tensor([1.0, 0.2, 0.6, 0.9, 0.4])

    def loss_fn2(out, x):
        return tm.importance_weighted_loss(out, x, importance2)

    calls = {"make_batch": 0, "loss_fn": 0}

    def counted(name, fn):
        def wrapped(*args):
            calls[name] += 1
            return fn(*args)
        return wrapped

    ref_model2 = copy.deepcopy(base)
    expected2 = tm.optimize(ref_model2, batches(7), loss_fn2, n_steps2, lr2)
    learner_model2 = copy.deepcopy(base)
    history2 = _history(ex, call(ex, train, learner_model2, counted("make_batch", batches(7)),
                                 counted("loss_fn", loss_fn2), n_steps2, lr2), n_steps2)
    require(calls["make_batch"] == n_steps2, ex,
            f"make_batch was called {calls['make_batch']} times in {n_steps2} steps; draw "
            "exactly one batch per step.")
    require(calls["loss_fn"] == n_steps2, ex,
            f"loss_fn was called {calls['loss_fn']} times in {n_steps2} steps; compute the loss "
            "once per step and record that value (before the update), without a second forward "
            "pass.")
    compare(history2, expected2.double(), exercise=ex,
            what=f"the loss history for a second run (lr={lr2}, n_steps={n_steps2}, another "
                 "loss function): does your loop use its arguments?",
            atol=1e-5, rtol=1e-4)
    compare(learner_model2.W.detach(), ref_model2.W.detach(), exercise=ex,
            what="the weights W after the second run", atol=1e-5, rtol=1e-4)
    passed(ex, f"same loss history and weights as the reference in two runs ({n_steps} steps "
               f"at lr={lr}, {n_steps2} steps at lr={lr2}, two losses), one batch and one loss "
               f"per step; loss {early:.4f} -> {late:.4f} in the first.")


# --------------------------------------------------------------------------- analysis


def _geometries() -> list[tuple[str, Tensor]]:
    """Weights with known geometry, each [1, d_hidden, n_features]."""
    angles = torch.arange(5) * 2 * math.pi / 5
    pentagon = torch.stack([angles.cos(), angles.sin()]).unsqueeze(0)
    antipodal = torch.tensor([[[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.7, -0.7]]])
    orthogonal = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.5, 0.0]]])  # feature 2 not represented
    return [("a pentagon in 2-D", pentagon), ("two antipodal pairs", antipodal),
            ("orthogonal features and a zero column", orthogonal)]


def test_extra_feature_regime(extra_feature_regime: Callable) -> None:
    """extra_feature_regime(W [n_inst, d_hidden, 2], threshold) -> [n_inst] long in {0, 1, 2}."""
    ex = "extra_feature_regime"
    cases = []
    for seed, (n_inst, d_hidden, threshold) in enumerate([(12, 1, 0.5), (9, 1, 0.3), (8, 2, 0.8)]):
        g = seeded_generator(50 + seed)
        W = torch.randn((n_inst, d_hidden, 2), generator=g)
        W = W * (torch.rand((n_inst, 1, 2), generator=g) * 1.6)  # norms on both sides
        cases.append((f"random W of shape {(n_inst, d_hidden, 2)}, threshold {threshold}",
                      W, threshold))
    # one of each regime, a zero model, and a norm exactly at the threshold (not represented)
    known = torch.tensor([[[1.0, 0.0]], [[0.0, -1.0]], [[1.0, -0.9]], [[0.0, 0.0]],
                          [[0.9, 0.5]], [[0.5, 0.9]]])
    cases.append(("the known cases (none / dedicated / superposition / zero / at threshold)",
                  known, 0.5))
    for what, W, threshold in cases:
        kept = _kept(W=W)
        mine = call(ex, extra_feature_regime, W, threshold)
        _unchanged(ex, kept, W=W)
        expected = tm.extra_feature_regime(W, threshold)
        require(torch.is_tensor(mine) and not mine.dtype.is_floating_point
                and mine.dtype != torch.bool, ex,
                "return the regimes as an integer tensor (0, 1 or 2 per instance, e.g. dtype "
                f"torch.long), got {getattr(mine, 'dtype', type(mine).__name__)}.")
        norms = W.norm(dim=1)
        rep = norms > threshold
        half = norms > 0.5
        mistakes = {
            "the two features are swapped (the extra feature is feature 1, the last one)":
                torch.where(~rep[:, 0], 0, torch.where(rep[:, 1], 2, 1)),
            "the threshold argument is ignored (0.5 is used)":
                torch.where(~half[:, 1], 0, torch.where(half[:, 0], 2, 1)),
            "a norm equal to the threshold counts as represented (use >, not >=)":
                torch.where(~(norms >= threshold)[:, 1], 0,
                            torch.where((norms >= threshold)[:, 0], 2, 1)),
        }
        compare(mine, expected, exercise=ex, what=f"the regimes for {what}", atol=0, rtol=0,
                mistakes={k: v for k, v in mistakes.items() if not torch.equal(v, expected)})
    passed(ex, "the same regime as the reference for random 1- and 2-dimensional models at "
               "three thresholds and for the known cases (a norm at the threshold is not "
               "represented); integer result, W left unchanged.")


def test_norms_and_interference(norms_and_interference: Callable) -> None:
    """norms_and_interference(W) -> (norms [n_inst, n_features], interference [...])."""
    ex = "norms_and_interference"
    inputs = [("random W of shape " + str(s), torch.randn(s, generator=seeded_generator(i)))
              for i, s in enumerate([(3, 2, 5), (2, 4, 7), (1, 3, 3)])]
    for what, W in inputs + _geometries():
        kept = _kept(W=W)
        result = call(ex, norms_and_interference, W)
        _unchanged(ex, kept, W=W)
        require(isinstance(result, tuple | list) and len(result) == 2, ex,
                f"return a pair (norms, interference), got {type(result).__name__}.")
        norms, interference = result
        ref_norms, ref_int = tm.norms_and_interference(W)
        compare(norms, ref_norms, exercise=ex, what=f"the first result (norms) for {what}",
                mistakes={"the squared norms are returned": ref_norms**2,
                          "the norms are taken over the feature axis":
                              W.norm(dim=-1)})
        if torch.is_tensor(interference) and torch.isnan(interference).any() \
                and not torch.isnan(ref_int).any():
            raise CheckFailed(f"{ex}: the interference for {what} contains NaN; a zero column "
                              "should give 0 (clamp the norm before dividing).")
        W_hat = W / W.norm(dim=1, keepdim=True).clamp_min(1e-8)
        overlaps = torch.einsum("ihf,ihg->ifg", W_hat, W)
        eye = torch.eye(W.shape[-1])
        compare(interference, ref_int, exercise=ex,
                what=f"the second result (interference) for {what}",
                mistakes={
                    "the feature's own term j = i is included": (overlaps**2).sum(-1),
                    "W is used instead of the normalised W_hat":
                        ((torch.einsum("ihf,ihg->ifg", W, W) ** 2) * (1 - eye)).sum(-1),
                    "the dot products are not squared": (overlaps * (1 - eye)).sum(-1),
                })
    W64 = torch.randn((2, 3, 4), generator=seeded_generator(40), dtype=torch.float64)
    result = call(ex, norms_and_interference, W64)
    if isinstance(result, tuple | list) and len(result) == 2:
        for name, value in zip(("norms", "interference"), result, strict=True):
            _require_dtype(ex, value, torch.float64, f"the {name} for float64 W")
    passed(ex, "norms and interference match the reference on random weights and known "
               "geometries (orthogonal: 0, antipodal pair: 1, zero column: 0); float64 kept, "
               "W left unchanged.")
