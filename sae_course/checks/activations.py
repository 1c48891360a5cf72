"""Checks for notebook 03, activations from a language model.

Checks that need a model load the course's offline model themselves (once, on the CPU), so
they never need a network, whichever model the notebook itself uses.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

from sae_course import activations as ref
from sae_course import text
from sae_course.checks.harness import CheckFailed, call, compare, passed, require, seeded_generator


@functools.lru_cache(maxsize=1)
def check_model() -> Any:
    """The offline model, loaded once per process for every check."""
    from sae_course.models import load_model

    return load_model("offline", device="cpu")


def _tokens(model: Any, batch: int, pos: int, seed: int) -> Tensor:
    """Random token ids with BOS first, like the contexts the store uses."""
    g = seeded_generator(seed)
    tokens = torch.randint(0, min(model.cfg.d_vocab, 2000), (batch, pos), generator=g)
    tokens[:, 0] = text.bos_id_of(model.tokenizer)
    return tokens


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
    for seed, names in enumerate(cases):
        tokens = _tokens(model, 3, 9, seed)
        got = call(ex, capture_activations, model, tokens, list(names))
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
    passed(ex, "one forward pass, every hook's activation captured under its name")


def test_residual_stream(residual_stream) -> None:
    ex = "residual_stream"
    model = check_model()
    n = model.cfg.n_layers
    for seed, (batch, pos) in enumerate([(2, 7), (1, 1), (3, 12)]):
        tokens = _tokens(model, batch, pos, seed)
        expected = ref.residual_stream(model, tokens)
        got = call(ex, residual_stream, model, tokens)
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
    passed(ex, f"{n + 1} residual stream snapshots match the cache")


def test_residual_norms(residual_norms) -> None:
    ex = "residual_norms"
    g = seeded_generator(0)
    cases = [
        torch.randn(5, 3, 7, 16, generator=g) * torch.rand(5, 3, 7, 1, generator=g) * 10,
        torch.randn(2, 1, 1, 4, generator=g),
        torch.zeros(3, 2, 4, 8),
        ref.residual_stream(check_model(), _tokens(check_model(), 2, 6, 0)),
    ]
    for resid in cases:
        expected = ref.residual_norms(resid)
        got = call(ex, residual_norms, resid.clone())
        compare(got, expected, exercise=ex,
                what=f"the norms of a residual stream {tuple(resid.shape)}",
                mistakes={
                    "you returned squared norms (sum of squares without the square root)":
                        resid.pow(2).sum(-1).mean(1),
                    "you took the norm of the batch-mean vector instead of the mean of the norms":
                        resid.mean(1).norm(dim=-1),
                    "you averaged over positions instead of the batch": resid.norm(dim=-1).mean(2),
                    "you averaged the components instead of taking the L2 norm":
                        resid.mean(-1).mean(1),
                })
    passed(ex, "mean L2 norm per layer and position")


# ---------------------------------------------------------------- stopping early


def test_stop_early_activations(stop_early_activations) -> None:
    ex = "stop_early_activations"
    model = check_model()
    n = model.cfg.n_layers
    for seed, hook_name in enumerate(["blocks.0.hook_resid_pre", f"blocks.{n // 2}.hook_resid_pre",
                                      "blocks.1.attn.hook_z", f"blocks.{n - 1}.hook_resid_post"]):
        tokens = _tokens(model, 2, 8, seed)
        later = f"blocks.{ref.hook_layer(hook_name) + 1}.hook_resid_pre"
        if later not in model.hook_dict:
            later = "ln_final.hook_normalized"
        fired: list[str] = []

        def spy(acts: Tensor, hook: Any, _fired: list[str] = fired, _later: str = later) -> None:
            _fired.append(_later)

        with model.hooks(fwd_hooks=[(later, spy)]):
            got = call(ex, stop_early_activations, model, tokens, hook_name)
        expected = ref.harvest(model, tokens, hook_name, stop_early=False)
        compare(got, expected, exercise=ex, what=f"the activation at {hook_name}")
        require(
            not fired, ex,
            f"the activation is right but the forward pass went on past {hook_name} ({later} "
            "ran). Raise StopForward in the hook, after storing the activation, and catch it "
            "around run_with_hooks.",
        )
    passed(ex, "right activations, and nothing after the hook ran")


# ---------------------------------------------------------------- contexts and tokens


def test_pack_contexts(pack_contexts) -> None:
    ex = "pack_contexts"
    g = seeded_generator(0)
    bos = 0
    docs = [torch.randint(1, 50, (int(k),), generator=g).tolist()
            for k in torch.randint(1, 30, (12,), generator=g)]
    cases = [
        (docs, 8),
        (docs, 2),
        (docs[:1], 64),  # too little text for one context
        ([[5, 6, 7], [8, 9]], 4),
        ([list(range(1, 20))], 20),  # exactly one context: 19 tokens + separator = 20
    ]
    for token_lists, context_len in cases:
        expected = text.pack_contexts(token_lists, context_len, bos)
        got = call(ex, pack_contexts, [list(d) for d in token_lists], context_len, bos)
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
    passed(ex, "BOS-led contexts of the right length, documents separated, no padding")


def test_flatten_activations(flatten_activations) -> None:
    ex = "flatten_activations"
    g = seeded_generator(0)
    for shape in [(3, 5, 4), (1, 2, 3), (4, 1, 2), (2, 7, 1)]:
        acts = torch.randn(*shape, generator=g)
        for exclude_bos in (True, False):
            expected = ref.flatten_activations(acts, exclude_bos)
            got = call(ex, flatten_activations, acts.clone(), exclude_bos)
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
    passed(ex, "[batch, pos, d] -> [tokens, d], BOS dropped when asked")


# ---------------------------------------------------------------- shuffle buffer


def test_refill_and_split(refill_and_split) -> None:
    ex = "refill_and_split"
    cases = [(40, 24, 8, 3), (0, 32, 4, 2), (10, 5, 8, 1), (7, 1, 1, 5), (100, 100, 16, 6)]
    for seed, (n_buffer, n_new, batch_size, d) in enumerate(cases):
        g = seeded_generator(100 + seed)
        buffer = torch.randn(n_buffer, d, generator=g)
        new = torch.randn(n_new, d, generator=g)
        exp_batches, exp_kept = ref.refill_and_split(
            buffer, new, batch_size, seeded_generator(1000 + seed))
        result = call(ex, refill_and_split, buffer.clone(), new.clone(), batch_size,
                      seeded_generator(1000 + seed))
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
        together = torch.cat([batches.reshape(-1, d), kept])
        require(
            torch.equal(together.sort(0).values, pool.sort(0).values), ex,
            "batches and kept together must hold exactly the pool's activations.",
        )
    passed(ex, "deterministic shuffle, half the pool served, nothing lost")


# ---------------------------------------------------------------- normalisation


def test_norm_scale_factor(norm_scale_factor) -> None:
    ex = "norm_scale_factor"
    g = seeded_generator(0)
    cases = [
        torch.randn(200, 16, generator=g) * torch.rand(200, 1, generator=g).pow(3) * 30,
        torch.randn(1, 768, generator=g) * 1000,
        torch.randn(50, 3, generator=g) * 1e-3,
        ref.flatten_activations(ref.harvest(check_model(), _tokens(check_model(), 2, 9, 0),
                                            "blocks.1.hook_resid_pre")),
    ]
    for acts in cases:
        d = acts.shape[-1]
        expected = ref.norm_scale_factor(acts)
        got = call(ex, norm_scale_factor, acts.clone())
        got = torch.as_tensor(got, dtype=torch.float64)
        norms = acts.double().norm(dim=-1)
        compare(got.reshape(()), expected.double(), exercise=ex, rtol=1e-4, atol=0,
                what=f"the scale factor for activations {tuple(acts.shape)}",
                mistakes={
                    "you used d_in instead of sqrt(d_in) as the target norm":
                        d / norms.mean(),
                    "you inverted the factor (mean norm / sqrt(d_in))": norms.mean() / math.sqrt(d),
                    "you used the root-mean-square norm instead of the mean norm":
                        math.sqrt(d) / norms.pow(2).mean().sqrt(),
                    "you normalised by the mean absolute component, not the mean norm":
                        math.sqrt(d) / acts.double().abs().mean(),
                })
        scaled = acts.double() * got
        require(
            abs(scaled.norm(dim=-1).mean().item() - math.sqrt(d)) < 1e-3 * math.sqrt(d), ex,
            "after scaling, the mean norm should be sqrt(d_in).",
        )
    passed(ex, "scaled activations have mean norm sqrt(d_in)")
