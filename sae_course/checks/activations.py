"""Checks for notebook 03, activations from a language model.

Checks that need a model load the course's offline model themselves (once, on the CPU), so
they never need a network, whichever model the notebook itself uses. The learner's code runs
on that model inside `watch_model`: a hook it leaves behind (say a hook that raised before it
could be removed) is taken off again and reported, so a failing attempt cannot break a later
cell or another exercise's check, and its forward passes are counted.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import torch
from torch import Tensor

from sae_course import activations as ref
from sae_course import text
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


@functools.lru_cache(maxsize=1)
def check_model() -> Any:
    """The offline model, loaded once per process for every check."""
    from sae_course.models import load_model

    model = load_model("offline", device="cpu")
    # The bridge adds hooks of its own on its first forward pass; run it once here, so that
    # the hooks watch_model finds afterwards are the learner's.
    model(_tokens(model, 1, 2, 0), return_type=None)
    return model


def _tokens(model: Any, batch: int, pos: int, seed: int) -> Tensor:
    """Random token ids with BOS first, like the contexts the store uses."""
    g = seeded_generator(seed)
    tokens = torch.randint(0, min(model.cfg.d_vocab, 2000), (batch, pos), generator=g)
    tokens[:, 0] = text.bos_id_of(model.tokenizer)
    return tokens


def _copy(arg: Any) -> Any:
    return arg.clone() if isinstance(arg, Tensor) else copy.deepcopy(arg)


def _on_model(ex: str, fn: Any, model: Any, *args: Any, passes: int = 1,
              inputs: tuple[str, ...] = ("the tokens", "the hook names")) -> Any:
    """Call fn(model, *args) with the model watched: no hook may stay behind, the inputs must
    come back unchanged, and exactly `passes` forward passes may run."""
    kept = [_copy(a) for a in args]
    watch = None
    try:
        with watch_model(ex, model, model.hook_dict.get("hook_embed")) as watch:
            got = call(ex, fn, model, *args)
    finally:
        if watch is not None and watch.weights_changed:
            check_model.cache_clear()  # the next check loads a clean model
    for before, after, what in zip(kept, args, inputs, strict=False):
        unchanged(ex, before, after, f"{what} it was given")
    if watch.forward_passes == 0:
        raise CheckFailed(
            f"{ex}: your code never ran the model it was given. Use the `model` argument (not "
            "a model from another cell): the check passes a model of its own."
        )
    if watch.forward_passes != passes:
        raise CheckFailed(
            f"{ex}: your code ran {watch.forward_passes} forward passes of the model; "
            f"{passes} {'is' if passes == 1 else 'are'} enough (put every hook on one run)."
        )
    return got


# ---------------------------------------------------------------- hooks


def test_capture_activations(capture_activations) -> None:
    ex = "capture_activations"
    model = check_model()
    n = model.cfg.n_layers
    cases = [
        ["blocks.0.hook_resid_pre", f"blocks.{n - 1}.hook_resid_post",
         "blocks.0.attn.hook_pattern"],
        [f"blocks.{n // 2}.hook_mlp_out"],
        ["hook_embed", "blocks.1.hook_resid_mid"],
    ]
    shapes = [(3, 9), (1, 5), (2, 12)]
    for seed, (names, (batch, pos)) in enumerate(zip(cases, shapes, strict=True)):
        tokens = _tokens(model, batch, pos, seed)
        got = _on_model(ex, capture_activations, model, tokens, list(names))
        require(isinstance(got, dict), ex, f"return a dict {{hook name: activation}}, got "
                f"{type(got).__name__}.")
        missing = [name for name in names if name not in got]
        if missing and list(got) == [names[-1]]:
            raise CheckFailed(
                f"{ex}: only {names[-1]!r} is in the dict: every hook stored under the last "
                "name. A lambda (or def) made in a loop sees the loop variable's last value; "
                "build each hook in a helper function that takes the name as an argument."
            )
        require(
            not missing, ex,
            f"the dict has keys {sorted(got)} but lacks {missing}. Key each activation by the "
            "name you hooked (not hook.name: the bridge calls its hook points by their own "
            "names, e.g. blocks.0.hook_in for blocks.0.hook_resid_pre)."
        )
        for name in names:
            expected = ref.harvest(model, tokens, name, stop_early=False)
            compare(got[name], expected, exercise=ex, what=f"the activation at {name}",
                    mistakes={"you kept only the first item of the batch": expected[0],
                              "you dropped the BOS position": expected[:, 1:]})
            same_kind(ex, got[name], expected, f"the activation at {name}")
    passed(ex, "one forward pass on the given model, every hook's activation under its name, "
               "no hook left behind, the inputs untouched")


def test_residual_stream(residual_stream) -> None:
    ex = "residual_stream"
    model = check_model()
    n = model.cfg.n_layers
    for seed, (batch, pos) in enumerate([(2, 7), (1, 1), (3, 12)]):
        tokens = _tokens(model, batch, pos, seed)
        expected = ref.residual_stream(model, tokens)
        got = _on_model(ex, residual_stream, model, tokens)
        _, cache = model.run_with_cache(tokens)
        posts = torch.stack([cache[f"blocks.{layer}.hook_resid_post"] for layer in range(n)])
        mids = torch.stack([cache[f"blocks.{layer}.hook_resid_mid"] for layer in range(n)])
        mistakes = {
            "you used hook_resid_post for every block (that skips the embeddings)":
                torch.cat([posts, posts[-1:]]),
            "you used hook_resid_mid (between attention and MLP) instead of hook_resid_pre":
                torch.cat([mids, posts[-1:]]),
        }
        if isinstance(got, Tensor) and got.shape[0] == n:
            raise CheckFailed(
                f"{ex}: you returned {n} layers of residual stream; there are n_layers + 1 = "
                f"{n + 1}: the stream entering each of the {n} blocks, then the final "
                f"blocks.{n - 1}.hook_resid_post."
            )
        compare(got, expected, exercise=ex,
                what=f"the residual stream for tokens {tuple(tokens.shape)}",
                mistakes=mistakes)
        same_kind(ex, got, expected, "the residual stream")
    passed(ex, f"{n + 1} residual stream snapshots match the cache, from one forward pass with "
               "no hook left behind")


def _expect_value_error(ex: str, fn: Any, args: tuple, situation: str) -> None:
    """The learner's code must raise a ValueError (saying what is wrong) in `situation`."""
    try:
        fn(*args)
    except ValueError:
        return
    except NotImplementedError:
        raise
    except Exception as err:
        raise CheckFailed(
            f"{ex}: {situation}, your code raised {type(err).__name__}: {err}. Check for it "
            "yourself and raise a ValueError that says what is wrong."
        ) from err
    raise CheckFailed(f"{ex}: {situation}, your code returned a result; raise a ValueError that "
                      "says what is wrong instead.")


def test_residual_norm_profile(residual_norm_profile) -> None:
    ex = "residual_norm_profile"
    g = seeded_generator(0)
    bos_zero = torch.randn(3, 2, 4, 8, generator=g)
    bos_zero[:, :, 0] = 0  # a BOS of norm 0: the ratio is 0
    sink = torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64) * 100
    sink[:, :, 0] *= 30  # an attention sink, as on GPT-2
    cases = [
        torch.randn(5, 3, 7, 16, generator=g) * torch.rand(5, 3, 7, 1, generator=g) * 10,
        torch.randn(2, 1, 2, 4, generator=g),  # batch of 1, one position besides BOS
        bos_zero,
        ref.residual_stream(check_model(), _tokens(check_model(), 2, 6, 0)),
        sink,
    ]
    for resid in cases:
        exp_norms, exp_ratio = ref.residual_norm_profile(resid)
        given = resid.clone()
        got = call(ex, residual_norm_profile, given)
        unchanged(ex, resid, given, "the residual stream it was given")
        require(isinstance(got, tuple) and len(got) == 2, ex,
                f"return a tuple (norms, bos_ratio), got {type(got).__name__}.")
        norms, ratio = got
        what = f"a residual stream {tuple(resid.shape)}"
        compare(norms, exp_norms, exercise=ex, what=f"the norms of {what}",
                mistakes={
                    "you returned squared norms (sum of squares without the square root)":
                        resid.pow(2).sum(-1).mean(1),
                    "you took the norm of the batch-mean vector instead of the mean of the norms":
                        resid.mean(1).norm(dim=-1),
                    "you averaged over positions instead of the batch": resid.norm(dim=-1).mean(2),
                    "you averaged the components instead of taking the L2 norm":
                        resid.mean(-1).mean(1),
                })
        same_kind(ex, norms, exp_norms, "the norms")
        per_context = resid.norm(dim=-1)  # [n_layers + 1, batch, pos]
        compare(ratio, exp_ratio, exercise=ex, what=f"the BOS ratio of {what}",
                mistakes={
                    "you put BOS in the others' mean too (average norms[:, 1:] only)":
                        exp_norms[:, 0] / exp_norms.mean(dim=1),
                    "you inverted the ratio (the others' mean over BOS)":
                        exp_norms[:, 1:].mean(dim=1) / exp_norms[:, 0],
                    "you took the ratio in each context and averaged those (the ratio of the "
                    "batch means is asked for)":
                        (per_context[:, :, 0] / per_context[:, :, 1:].mean(dim=-1)).mean(dim=1),
                    "you took the difference, not the ratio":
                        exp_norms[:, 0] - exp_norms[:, 1:].mean(dim=1),
                })
        same_kind(ex, ratio, exp_ratio, "the BOS ratio")
    one = torch.randn(3, 2, 1, 4, generator=g)
    _expect_value_error(ex, residual_norm_profile, (one.clone(),),
                        "with a single position (BOS has no other position to compare with)")
    passed(ex, "mean L2 norm per depth and position and the BOS-to-others ratio per depth "
               "(a zero BOS and an attention sink among the cases), in the input's dtype, a "
               "ValueError for a single position, input untouched")


# ---------------------------------------------------------------- stopping early


def test_stop_early_activations(stop_early_activations) -> None:
    ex = "stop_early_activations"
    model = check_model()
    n = model.cfg.n_layers
    for seed, hook_name in enumerate(["blocks.0.hook_resid_pre", f"blocks.{n // 2}.hook_resid_pre",
                                      "blocks.1.attn.hook_z", f"blocks.{n - 1}.hook_resid_post"]):
        tokens = _tokens(model, 1 + seed % 3, 5 + 2 * seed, seed)
        later = f"blocks.{ref.hook_layer(hook_name) + 1}.hook_resid_pre"
        if later not in model.hook_dict:
            later = "ln_final.hook_normalized"
        fired: list[str] = []
        # a plain torch hook on the later hook point: the learner's reset_hooks() cannot remove it
        spy = model.hook_dict[later].register_forward_pre_hook(
            lambda module, args, _fired=fired, _later=later: _fired.append(_later))
        try:
            got = _on_model(ex, stop_early_activations, model, tokens, hook_name,
                            inputs=("the tokens", "the hook name"))
        finally:
            spy.remove()
        expected = ref.harvest(model, tokens, hook_name, stop_early=False)
        compare(got, expected, exercise=ex, what=f"the activation at {hook_name}")
        same_kind(ex, got, expected, f"the activation at {hook_name}")
        require(
            not fired, ex,
            f"the activation is right but the forward pass went on past {hook_name} ({later} "
            "ran). Raise StopForward in the hook, after storing the activation, and catch it "
            "around run_with_hooks.",
        )
    passed(ex, "right activations from one forward pass that stopped at the hook, no hook "
               "left behind")


# ---------------------------------------------------------------- contexts and tokens


def test_pack_contexts(pack_contexts) -> None:
    ex = "pack_contexts"
    g = seeded_generator(0)
    docs = [torch.randint(1, 50, (int(k),), generator=g).tolist()
            for k in torch.randint(1, 30, (12,), generator=g)]
    cases = [  # (documents, context_len, bos id): the BOS id varies like everything else
        (docs, 8, 0),
        (docs, 2, 50),
        (docs[:1], 64, 3),  # too little text for one context
        ([[5, 6, 7], [8, 9]], 4, 50256),
        ([list(range(1, 20))], 20, 1),  # exactly one context: 19 tokens + separator = 20
    ]
    for token_lists, context_len, bos in cases:
        expected = text.pack_contexts(token_lists, context_len, bos)
        given = [list(d) for d in token_lists]
        got = call(ex, pack_contexts, given, context_len, bos)
        unchanged(ex, token_lists, given, "the documents (lists of token ids) it was given")
        stream_no_sep = [t for d in token_lists for t in d]
        body = context_len - 1
        n_wrong = len(stream_no_sep) // body
        no_sep = torch.cat([torch.full((n_wrong, 1), bos),
                            torch.tensor(stream_no_sep[: n_wrong * body]).reshape(n_wrong, body)],
                           1)
        if isinstance(got, Tensor) and got.ndim == 2 and got.shape[1] != context_len:
            raise CheckFailed(
                f"{ex}: contexts have length {got.shape[1]}, should be {context_len} (BOS "
                f"included). Cut the stream into pieces of context_len - 1 = {body} tokens, then "
                "put BOS first."
            )
        stream = [t for d in token_lists for t in [*d, bos]]
        n_over = len(stream) // context_len
        overwritten = torch.tensor(stream[: n_over * context_len]).reshape(n_over, context_len)
        overwritten[:, 0] = bos
        n_pad = -(-len(stream) // body)
        padded = stream + [bos] * (n_pad * body - len(stream))
        padded = torch.cat([torch.full((n_pad, 1), bos),
                            torch.tensor(padded, dtype=torch.long).reshape(n_pad, body)], 1)
        compare(got, expected, exercise=ex,
                what=f"the contexts for {len(token_lists)} documents, context_len={context_len}",
                mistakes={
                    "you did not put the end-of-text token (bos_id) after each document": no_sep,
                    "you cut pieces of context_len tokens and overwrote their first token with "
                    "BOS (that token is lost)": overwritten,
                    "you padded the last, partial piece instead of dropping it": padded,
                })
        require(got.dtype == torch.long, ex, f"token ids must be torch.long, got {got.dtype}.")
    passed(ex, "BOS-led contexts of the right length for several BOS ids, documents separated, "
               "no padding, the documents untouched")


def test_flatten_activations(flatten_activations) -> None:
    ex = "flatten_activations"
    g = seeded_generator(0)
    for shape, dtype in [((3, 5, 4), torch.float32), ((1, 2, 3), torch.float64),
                         ((4, 1, 2), torch.float32), ((2, 7, 1), torch.float16)]:
        acts = torch.randn(*shape, generator=g).to(dtype)
        for exclude_bos in (True, False):
            expected = ref.flatten_activations(acts, exclude_bos)
            given = acts.clone()
            got = call(ex, flatten_activations, given, exclude_bos)
            unchanged(ex, acts, given, "the activations it was given")
            mistakes = {
                "you dropped the last position instead of the first (BOS is position 0)":
                    acts[:, :-1].reshape(-1, shape[-1]),
                "you flattened in (position, context) order (transposed) instead of "
                "(context, position)":
                    acts[:, int(exclude_bos):].transpose(0, 1).reshape(-1, shape[-1]),
                "you dropped only the first row after flattening (BOS of the first context only)":
                    acts.reshape(-1, shape[-1])[1:],
            }
            compare(got, expected, exercise=ex,
                    what=f"the flattened activations of {shape} (exclude_bos={exclude_bos})",
                    mistakes=mistakes)
            same_kind(ex, got, expected, "the flattened activations")
    passed(ex, "[batch, pos, d] -> [tokens, d] in the input's dtype, BOS dropped when asked")


# ---------------------------------------------------------------- shuffle buffer


def test_refill_and_split(refill_and_split) -> None:
    ex = "refill_and_split"
    cases = [(40, 24, 8, 3), (0, 32, 4, 2), (10, 5, 8, 1), (7, 1, 1, 5), (100, 100, 16, 6)]
    for seed, (n_buffer, n_new, batch_size, d) in enumerate(cases):
        g = seeded_generator(100 + seed)
        dtype = torch.float64 if seed == 2 else torch.float32
        buffer = torch.randn(n_buffer, d, generator=g, dtype=dtype)
        new = torch.randn(n_new, d, generator=g, dtype=dtype)
        exp_batches, exp_kept = ref.refill_and_split(
            buffer, new, batch_size, seeded_generator(1000 + seed))
        given = (buffer.clone(), new.clone())
        result = call(ex, refill_and_split, *given, batch_size, seeded_generator(1000 + seed))
        unchanged(ex, buffer, given[0], "the buffer it was given")
        unchanged(ex, new, given[1], "the new activations it was given")
        require(isinstance(result, tuple) and len(result) == 2, ex,
                "return a tuple (batches, kept).")
        batches, kept = result
        pool = torch.cat([buffer, new])
        n_half = (len(pool) // 2) // batch_size
        n_all = len(pool) // batch_size
        compare(batches, exp_batches, exercise=ex,
                what=f"the batches served from a pool of {len(pool)} (batch_size {batch_size})",
                mistakes={
                    "you did not shuffle the pool":
                        pool[: n_half * batch_size].reshape(n_half, batch_size, d),
                    "you served every full batch instead of half the pool (the buffer then "
                    "empties and stops mixing contexts)":
                        pool[: n_all * batch_size].reshape(n_all, batch_size, d),
                })
        compare(kept, exp_kept, exercise=ex, what="the activations kept in the buffer")
        same_kind(ex, batches, exp_batches, "the batches")
        same_kind(ex, kept, exp_kept, "the activations kept")
        together = torch.cat([batches.reshape(-1, d), kept])
        require(
            torch.equal(together.sort(0).values, pool.sort(0).values), ex,
            "batches and kept together must hold exactly the pool's activations.",
        )
    passed(ex, "the generator's shuffle, half the pool served, nothing lost, dtype and inputs "
               "kept")


# ---------------------------------------------------------------- normalisation


def _counted(batches: list[Tensor], drawn: list[int]) -> Any:
    """A one-shot iterator over `batches` that counts in drawn[0] how many were drawn."""
    for batch in batches:
        drawn[0] += 1
        yield batch


def test_estimate_norm_scale_factor(estimate_norm_scale_factor) -> None:
    ex = "estimate_norm_scale_factor"
    g = seeded_generator(0)

    def batches_of(sizes: list[int], d: int, scale: float = 1.0,
                   dtype: torch.dtype = torch.float32) -> list[Tensor]:
        return [(torch.randn(n, d, generator=g, dtype=dtype)
                 * torch.rand(n, 1, generator=g, dtype=dtype).pow(3) * scale) for n in sizes]

    real = ref.flatten_activations(ref.harvest(check_model(), _tokens(check_model(), 3, 9, 0),
                                               "blocks.1.hook_resid_pre"))
    cases = [  # (batches, n_batches, one-shot iterator?): sizes differ, more batches than used
        (batches_of([200, 50, 7, 120], 16, 30.0), 3, True),
        (batches_of([1], 768, 1000.0), 1, False),
        (batches_of([50, 50], 3, 1e-3), 2, False),
        (list(real.split(8)), 2, True),
        (batches_of([30, 11, 4, 9, 2], 5, 7.0, torch.float64), 4, True),
    ]
    for batches, n_batches, one_shot in cases:
        d = batches[0].shape[-1]
        expected = ref.estimate_norm_scale_factor(batches, n_batches)
        kept = [b.clone() for b in batches]
        drawn = [0]
        given = _counted(batches, drawn) if one_shot else list(batches)
        got = call(ex, estimate_norm_scale_factor, given, n_batches)
        for before, after in zip(kept, batches, strict=True):
            unchanged(ex, before, after, "the batches it was given (return the factor; scaling "
                      "them is the caller's job)")
        sizes = [len(b) for b in batches]
        what = (f"the scale factor from the first {n_batches} of {len(batches)} batches of sizes "
                f"{sizes}{' (a one-shot iterator)' if one_shot else ''}")
        same_kind(ex, got, expected, "the scale factor")
        used = [b.double() for b in batches[:n_batches]]
        norms = torch.cat([b.norm(dim=-1) for b in used])
        every = torch.cat([b.double().norm(dim=-1) for b in batches])
        root = math.sqrt(d)
        compare(got, expected, exercise=ex, rtol=1e-4, atol=0, what=what,
                mistakes={
                    "you used d_in instead of sqrt(d_in) as the target norm":
                        d / norms.mean(),
                    "you inverted the factor (mean norm / sqrt(d_in))":
                        norms.mean() / root,
                    "you used the root-mean-square norm instead of the mean norm":
                        root / norms.pow(2).mean().sqrt(),
                    "you normalised by the mean absolute component, not the mean norm":
                        root / torch.cat([b.abs().reshape(-1) for b in used]).mean(),
                    "you averaged the mean norms of the batches: batches of different sizes then "
                    "weigh differently. Sum the norms and count the tokens":
                        root / torch.stack([b.norm(dim=-1).mean() for b in used]).mean(),
                    "you counted batches instead of tokens":
                        root / (norms.sum() / n_batches),
                    "you used only the first batch":
                        root / used[0].norm(dim=-1).mean(),
                    "you overwrote the running sum instead of adding to it (the last batch's "
                    "norms over every batch's tokens)":
                        root / (used[-1].norm(dim=-1).sum() / len(norms)),
                    "you used every batch there was, not the first n_batches":
                        root / every.mean(),
                })
        if one_shot:  # after the value, so that a wrong value is named first
            require(drawn[0] == n_batches, ex,
                    f"the factor is right, but your code drew {drawn[0]} batch"
                    f"{'es' if drawn[0] != 1 else ''} from the iterator for n_batches="
                    f"{n_batches}. Each batch may cost forward passes of the model: draw exactly "
                    "n_batches (itertools.islice(batches, n_batches) stops without drawing "
                    "another).")
    short = batches_of([10, 10], 4)
    _expect_value_error(ex, estimate_norm_scale_factor, (list(short), 3),
                        "given 2 batches and n_batches=3 (fewer batches than asked for)")
    _expect_value_error(ex, estimate_norm_scale_factor, (_counted(short, [0]), 3),
                        "given an iterator of 2 batches and n_batches=3 (fewer batches than "
                        "asked for)")
    mixed = [*batches_of([10], 8), *batches_of([10], 6)]
    _expect_value_error(ex, estimate_norm_scale_factor, (_counted(mixed, [0]), 2),
                        "given a batch of width 8, then one of width 6 (activations of two "
                        "different hooks)")
    passed(ex, "sqrt(d_in) / mean token norm over exactly the first n_batches batches (sizes "
               "differing; lists and one-shot iterators, no batch drawn beyond them), a 0-dim "
               "tensor of the input's dtype, a ValueError for too few batches or a change of "
               "width, batches untouched")
