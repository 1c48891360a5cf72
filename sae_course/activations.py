"""The activation store: a language model's activations at one hook, served as shuffled batches.

The pieces (each one an exercise in notebook 03):
- `harvest`: run the model on token contexts and capture the activations at a hook, stopping
  the forward pass right after that hook (`StopForward`), since nothing later is needed;
- `flatten_activations`: [batch, pos, d] -> [tokens, d], optionally dropping the BOS position
  (its residual norm is an outlier many times the others);
- `refill_and_split`: the shuffle buffer. Tokens of one context are strongly correlated, so the
  store mixes many contexts in a buffer and serves random halves of it;
- `norm_scale_factor`: scale activations to a mean norm of sqrt(d_in), so that SAE
  hyperparameters transfer across layers and models; `unnormalize` undoes it.
  `estimate_norm_scale_factor` estimates the same factor from the first batches of a stream,
  with a running sum (nothing concatenated).

Notebook 03 also measures the residual stream itself: `residual_norm_profile` gives the mean
norm at every depth and position and how far BOS stands apart from the other positions.

`ActivationStore` puts them together (its buffer does what `refill_and_split` does, in place, so
its memory stays at `buffer_mb`), with a progress bar and an optional disk cache of safetensors
shards keyed by model, hook, data and seed.

Token ids are checked where they enter (`check_tokens`, called by `harvest` and by the store):
integers, inside the vocabulary, no longer than the model's context.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import sys
from collections.abc import Generator, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm

from sae_course.files import save_safetensors_atomic, write_text_atomic

CACHE_FORMAT = 1


class StopForward(Exception):
    """Raised by a capturing hook to end the forward pass once the activation is in hand."""


# ---------------------------------------------------------------- hook names


def hook_names(model: Any) -> list[str]:
    """Every hook name the model accepts (TransformerLens names and the bridge's own)."""
    return list(model.hook_dict.keys())


def describe_hook_names(model: Any) -> str:
    """The valid hook names, with block hooks written once as blocks.{L}.<name>."""
    top, per_block = [], []
    for name in hook_names(model):
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
        if m is None:
            top.append(name)
        elif m[1] == "0":
            per_block.append(f"blocks.{{L}}.{m[2]}")
    n_layers = model.cfg.n_layers
    return (
        f"{', '.join(top)}; and for each layer L in 0..{n_layers - 1}: {', '.join(per_block)}"
    )


def check_hook_name(model: Any, hook_name: str) -> None:
    """Raise a ValueError listing the valid names unless `hook_name` is one."""
    if hook_name in model.hook_dict:
        return
    close = difflib.get_close_matches(hook_name, hook_names(model), n=3)
    suggestion = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown hook name {hook_name!r} for this model.{suggestion} Valid hook names: "
        f"{describe_hook_names(model)}. The residual stream entering layer L is "
        "blocks.{L}.hook_resid_pre (what the public GPT-2 SAEs read)."
    )


def hook_layer(hook_name: str) -> int | None:
    """The block a hook belongs to (`blocks.3.hook_resid_pre` -> 3), or None."""
    m = re.match(r"blocks\.(\d+)\.", hook_name)
    return int(m[1]) if m else None


# ---------------------------------------------------------------- the residual stream


def residual_hook_names(n_layers: int) -> list[str]:
    """The residual stream at every depth: entering each block, then leaving the last one."""
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)] + [
        f"blocks.{n_layers - 1}.hook_resid_post"
    ]


@torch.no_grad()
def residual_stream(model: Any, tokens: Tensor) -> Tensor:
    """[n_layers + 1, batch, pos, d_model]: resid_pre of every block, then the final resid_post."""
    names = residual_hook_names(model.cfg.n_layers)
    _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=names)
    return torch.stack([cache[name] for name in names])


def residual_norms(resid: Tensor) -> Tensor:
    """[n_layers + 1, pos]: the L2 norm of each residual vector, averaged over the batch."""
    return resid.norm(dim=-1).mean(dim=1)


class ResidualNorms(NamedTuple):
    """How big the residual stream is, and how far BOS stands apart (see
    `residual_norm_profile`)."""

    norms: Tensor  # [n_layers + 1, pos]: mean L2 norm over the batch, per depth and position
    bos_ratio: Tensor  # [n_layers + 1]: the BOS norm over the other positions' mean norm


def residual_norm_profile(resid: Tensor) -> ResidualNorms:
    """The norms of a residual stream [n_layers + 1, batch, pos, d] and BOS against the rest.

    `norms` is `residual_norms(resid)`, [n_layers + 1, pos]. `bos_ratio`, [n_layers + 1], is
    at each depth the BOS entry of `norms` (position 0) divided by the mean of the other
    positions' entries: 1 when BOS is as long as the rest, many times that for an attention
    sink. Both keep the input's dtype. Raises ValueError when there is only one position (no
    other position to compare BOS with).
    """
    if resid.ndim != 4:
        raise ValueError(f"Expected a residual stream [n_layers + 1, batch, pos, d], got shape "
                         f"{tuple(resid.shape)}. Fix: pass residual_stream(model, tokens).")
    if resid.shape[2] < 2:
        raise ValueError(f"The residual stream has {resid.shape[2]} position(s); comparing BOS "
                         "with the other positions needs at least 2. Fix: use longer contexts.")
    norms = residual_norms(resid)
    return ResidualNorms(norms, norms[:, 0] / norms[:, 1:].mean(dim=1))


# ---------------------------------------------------------------- harvesting


def check_tokens(model: Any, tokens: Any) -> None:
    """Raise ValueError naming the problem and the fix unless `tokens` are token ids the
    model can run: an integer tensor [batch, pos], ids in 0..d_vocab-1, pos <= n_ctx."""
    if not isinstance(tokens, Tensor):
        raise ValueError(f"Tokens must be a torch tensor of token ids, got "
                         f"{type(tokens).__name__}. Fix: tokenize first (sae_course.text).")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise ValueError(f"Tokens have dtype {tokens.dtype}; token ids are integers. Fix: pass "
                         "ids from the tokenizer (e.g. text.contexts_for_model), as torch.long.")
    if tokens.dim() != 2 or tokens.numel() == 0:
        raise ValueError(f"Tokens have shape {tuple(tokens.shape)}; the model wants "
                         "[n_contexts, context_len] with both >= 1. Fix: pass a 2-D batch.")
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is not None and tokens.shape[1] > n_ctx:
        raise ValueError(f"Contexts of {tokens.shape[1]} tokens are longer than the model's "
                         f"context ({n_ctx}). Fix: use context_len <= {n_ctx}.")
    vocab = getattr(model.cfg, "d_vocab", None)
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or (vocab is not None and high >= vocab):
        raise ValueError(f"Token ids run from {low} to {high}, outside the model's vocabulary "
                         f"(0..{vocab - 1 if vocab else '?'}). Fix: tokenize with this model's "
                         "tokenizer (a different model's ids do not fit).")


@torch.no_grad()
def harvest(model: Any, tokens: Tensor, hook_name: str, stop_early: bool = True) -> Tensor:
    """Activations [batch, pos, d] at `hook_name`, stopping after that hook if `stop_early`.

    The capturing hook stores the activation and raises `StopForward`, which is caught here:
    layers after the hook never run. With `stop_early=False` the whole model runs (slower,
    same activations).
    """
    check_hook_name(model, hook_name)
    check_tokens(model, tokens)
    captured: dict[str, Tensor] = {}

    def capture(acts: Tensor, hook: Any) -> None:
        captured["acts"] = acts.detach()
        if stop_early:
            raise StopForward

    try:
        model.run_with_hooks(tokens.to(model.cfg.device), fwd_hooks=[(hook_name, capture)],
                             return_type=None)
    except StopForward:
        pass
    if "acts" not in captured:
        raise RuntimeError(f"The hook {hook_name!r} never fired in the forward pass.")
    return captured["acts"]


def flatten_activations(acts: Tensor, exclude_bos: bool = True) -> Tensor:
    """[batch, pos, d] -> [batch * pos, d] in (context, position) order; BOS (pos 0) dropped
    when `exclude_bos`."""
    if exclude_bos:
        acts = acts[:, 1:]
    return acts.reshape(-1, acts.shape[-1])


# ---------------------------------------------------------------- shuffle buffer


def refill_and_split(
    buffer: Tensor, new: Tensor, batch_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Mix `new` activations into the buffer, shuffle, and hand out half as training batches.

    Returns (batches [n_batches, batch_size, d], kept [rest, d]): the pool `cat([buffer, new])`
    is permuted with `torch.randperm(len(pool), generator=generator)`; the first
    `(len(pool) // 2) // batch_size` full batches are served and the rest is kept.
    """
    pool = torch.cat([buffer, new])
    pool = pool[torch.randperm(len(pool), generator=generator).to(pool.device)]
    n_batches = (len(pool) // 2) // batch_size
    served = n_batches * batch_size
    return pool[:served].reshape(n_batches, batch_size, pool.shape[-1]), pool[served:]


# ---------------------------------------------------------------- normalisation


def norm_scale_factor(acts: Tensor) -> Tensor:
    """The factor that scales activations [tokens, d] to a mean L2 norm of sqrt(d)."""
    return math.sqrt(acts.shape[-1]) / acts.norm(dim=-1).mean()


def estimate_norm_scale_factor(batches: Iterable[Tensor], n_batches: int) -> Tensor:
    """`norm_scale_factor` estimated from the first `n_batches` batches [tokens, d] of a stream.

    Draws exactly `n_batches` batches from `batches` (a list, or an iterator such as a store
    whose batches cost forward passes: no more are drawn) and keeps a running sum of the token
    norms and a count of the tokens, so memory stays at one batch. Every token weighs the same,
    whatever the sizes of the batches. Returns sqrt(d) / mean norm, a 0-dimensional tensor of the
    activations' dtype. Raises ValueError when n_batches < 1, when fewer batches come, when a
    batch is not [tokens, d] or its d differs from the first batch's, or when they hold no token.
    """
    if not isinstance(n_batches, int) or isinstance(n_batches, bool) or n_batches < 1:
        raise ValueError(f"n_batches must be a positive integer, got {n_batches!r}.")
    total: Tensor | None = None
    count, seen, d = 0, 0, None
    for batch in islice(batches, n_batches):  # islice draws no batch beyond the n_batches-th
        if not isinstance(batch, Tensor) or batch.ndim != 2:
            raise ValueError(f"Batch {seen} is not [tokens, d] activations: got "
                             f"{tuple(batch.shape) if isinstance(batch, Tensor) else type(batch)}.")
        if d is None:
            d = batch.shape[-1]
        elif batch.shape[-1] != d:
            raise ValueError(f"Batch {seen} has width {batch.shape[-1]}, the first had {d}: "
                             "the batches must come from one hook.")
        norms = batch.norm(dim=-1).sum()
        total = norms if total is None else total + norms
        count += batch.shape[0]
        seen += 1
    if seen < n_batches:
        raise ValueError(f"Asked for {n_batches} batches to estimate the scale factor from, but "
                         f"only {seen} came. Fix: pass n_batches <= {seen}, or more data.")
    if count == 0:
        raise ValueError(f"The {seen} batches hold no tokens to estimate the scale factor from.")
    return math.sqrt(d) / (total / count)


def normalize(acts: Tensor, scale: Tensor | float) -> Tensor:
    return acts * scale


def unnormalize(acts: Tensor, scale: Tensor | float) -> Tensor:
    """Undo `normalize`: back to the model's own units (e.g. before splicing into a forward)."""
    return acts / scale


@torch.no_grad()
def fold_scale_into_sae(sae: Any, scale: Tensor | float) -> None:
    """Make an SAE trained on `normalize(x, scale)` take raw `x` and return raw reconstructions.

    With s = scale: pre = (s x - b_dec) W_enc + b_enc = (x - b_dec / s)(s W_enc) + b_enc, and
    x_hat / s = z (W_dec / s) + b_dec / s. So W_enc is multiplied by s and W_dec, b_dec divided
    by it; the latents (and any threshold on them) do not change at all.
    """
    s = float(scale)
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"The normalisation scale must be a finite number > 0, got {s}.")
    sae.W_enc.mul_(s)
    sae.W_dec.div_(s)
    sae.b_dec.div_(s)


# ---------------------------------------------------------------- disk cache


def tensor_digest(t: Tensor) -> str:
    """A content hash of a tensor (dtype, shape and values)."""
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- the store


class ActivationStore:
    """Shuffled training batches of a model's activations at one hook.

    Args:
        model: a TransformerBridge (see `sae_course.models.load_model`).
        contexts: token contexts, a [n, context_len] tensor or an iterable of such tensors
            (e.g. from `sae_course.text.contexts_for_model`); each should start with BOS.
        hook_name: where to read, e.g. "blocks.3.hook_resid_pre"; a wrong name lists the valid ones.
        batch_size: tokens per training batch.
        buffer_mb: memory of the shuffle buffer in MB (float32), allocated once: it holds
            `buffer_tokens` activations and is refilled when half empty. While batches are
            served the store holds, besides it, one forward batch of activations, the batch
            served and the shuffle's indices (8 bytes a token), whatever the token budget
            (`benchmarks/store_memory.py` measures the peak).
        model_batch_size: contexts per forward pass.
        exclude_bos: drop the BOS position of each context (an outlier).
        normalize: scale to a mean norm sqrt(d_in), estimated from `n_norm_tokens` tokens;
            `unnormalize` undoes it.
        stop_early: stop each forward pass after the hook (same activations, faster).
        cache_dir: if given, activations are saved there as safetensors shards and reused by
            later runs with the same model, hook, data, seed and settings.
        data_key: names the data for the cache key when `contexts` is not a tensor.
        seed: fixes the shuffle order (and is part of the cache key).
        device: where batches live (default: the model's device).
    """

    def __init__(
        self,
        model: Any,
        contexts: Tensor | Iterable[Tensor],
        hook_name: str,
        *,
        batch_size: int = 4096,
        buffer_mb: float = 64.0,
        model_batch_size: int = 16,
        exclude_bos: bool = True,
        normalize: bool = False,
        n_norm_tokens: int = 20_000,
        stop_early: bool = True,
        cache_dir: str | Path | None = None,
        data_key: str | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        progress: bool = True,
    ) -> None:
        check_hook_name(model, hook_name)
        for name, value in (("batch_size", batch_size), ("model_batch_size", model_batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}. Fix: e.g. "
                                 f"{name}={4096 if name == 'batch_size' else 16}.")
        if not isinstance(buffer_mb, (int, float)) or not math.isfinite(buffer_mb):
            raise ValueError(f"buffer_mb must be a finite number of MB, got {buffer_mb!r}.")
        self.model = model
        self.contexts = contexts
        self.hook_name = hook_name
        self.batch_size = batch_size
        self.model_batch_size = model_batch_size
        self.exclude_bos = exclude_bos
        self.stop_early = stop_early
        self.seed = seed
        self.progress = progress
        self.device = torch.device(device) if device is not None else torch.device(model.cfg.device)
        self.d_in = self._width()
        self.buffer_tokens = int(buffer_mb * 2**20 / (4 * self.d_in))
        if self.buffer_tokens < 2 * batch_size:
            raise ValueError(
                f"buffer_mb={buffer_mb} holds {self.buffer_tokens} activations of width "
                f"{self.d_in}, fewer than two batches of {batch_size}. Fix: raise buffer_mb to at "
                f"least {math.ceil(2 * batch_size * 4 * self.d_in / 2**20 * 10) / 10} or lower "
                "batch_size."
            )
        if isinstance(contexts, Tensor):
            check_tokens(model, contexts)  # all of it now, before any forward pass
            data_key = data_key or f"tokens:{tensor_digest(contexts)}"
        self.cache_path: Path | None = None
        if cache_dir is not None:
            if data_key is None:
                raise ValueError(
                    "A disk cache needs to know what data it holds: pass data_key='...' "
                    "(e.g. the dataset name and seed) when contexts is not a tensor."
                )
            self.cache_key = {
                "format": CACHE_FORMAT,
                "model": getattr(model, "sae_course_model_id", type(model).__name__),
                "hook": hook_name,
                "data": data_key,
                "seed": seed,
                "model_batch_size": model_batch_size,
                "exclude_bos": exclude_bos,
            }
            digest = hashlib.sha256(
                json.dumps(self.cache_key, sort_keys=True).encode()
            ).hexdigest()[:20]
            self.cache_path = Path(cache_dir) / digest
        self.forward_passes = 0  # model forward passes run (0 when all came from the cache)
        self.peak_buffer_tokens = 0  # the largest pool the buffer ever held
        self.scale_factor: Tensor | None = None
        if normalize:
            self.estimate_norm_scale(n_norm_tokens)

    def _width(self) -> int:
        """The activation width at the hook (one tiny stop-early forward pass)."""
        bos = self.model.tokenizer.bos_token_id or 0
        probe = torch.full((1, 2), bos, dtype=torch.long, device=self.model.cfg.device)
        acts = harvest(self.model, probe, self.hook_name)
        if acts.ndim != 3:
            raise ValueError(
                f"The store serves one vector per token, but {self.hook_name!r} gives activations "
                f"of shape {tuple(acts.shape)} for 1 context of 2 tokens, not [batch, pos, d]. "
                "Fix: pick a hook such as blocks.{L}.hook_resid_pre, hook_mlp_out or hook_attn_out."
            )
        return int(acts.shape[-1])

    # ---- sources of activations

    def _context_batches(self) -> Iterator[Tensor]:
        if isinstance(self.contexts, Tensor):
            for i in range(0, len(self.contexts), self.model_batch_size):
                yield self.contexts[i : i + self.model_batch_size]
        else:
            for batch in self.contexts:
                check_tokens(self.model, batch)  # as each arrives, before it is cached
                for i in range(0, len(batch), self.model_batch_size):
                    yield batch[i : i + self.model_batch_size]

    def _harvest_batch(self, tokens: Tensor) -> Tensor:
        self.forward_passes += 1
        acts = harvest(self.model, tokens.to(self.model.cfg.device), self.hook_name,
                       stop_early=self.stop_early)
        return flatten_activations(acts.float(), self.exclude_bos)

    def activation_chunks(self) -> Iterator[Tensor]:
        """[tokens, d] activations, one forward batch at a time, in data order (unshuffled);
        read from the disk cache where it has them, harvested (and cached) otherwise."""
        total = None
        if isinstance(self.contexts, Tensor):
            total = len(self.contexts) * (self.contexts.shape[1] - int(self.exclude_bos))
        bar = tqdm(total=total, unit="tok", desc=f"activations {self.hook_name}",
                   disable=not self.progress, leave=False)
        if self.cache_path is not None:
            self.cache_path.mkdir(parents=True, exist_ok=True)
            key_file = self.cache_path / "key.json"
            if not key_file.exists():
                write_text_atomic(key_file, json.dumps(self.cache_key, indent=1))
        try:
            for i, tokens in enumerate(self._context_batches()):
                shard = self.cache_path / f"shard_{i:06d}.safetensors" if self.cache_path else None
                if shard is not None and shard.exists():
                    acts = load_file(str(shard))["acts"]
                else:
                    acts = self._harvest_batch(tokens)
                    if shard is not None:
                        save_safetensors_atomic({"acts": acts}, shard, {"hook": self.hook_name})
                bar.update(len(acts))
                yield acts.to(self.device)
        finally:
            # A consumer that needs fewer tokens than the contexts hold (e.g. `batches(n)`)
            # stops early: that is a finished run, not a failure, so the bar ends full.
            if sys.exc_info()[0] in (None, GeneratorExit) and bar.total is not None:
                bar.total = bar.n
                bar.refresh()
            bar.close()

    # ---- normalisation

    def estimate_norm_scale(self, n_tokens: int = 20_000) -> Tensor:
        """Estimate (and keep) the factor giving the first `n_tokens` a mean norm sqrt(d_in)."""
        seen, n = [], 0
        for acts in self.activation_chunks():
            seen.append(acts)
            n += len(acts)
            if n >= n_tokens:
                break
        if not seen:
            raise ValueError(
                "No activations to estimate the normalisation from: contexts is empty."
            )
        self.scale_factor = norm_scale_factor(torch.cat(seen)[:n_tokens])
        return self.scale_factor

    def normalize(self, acts: Tensor) -> Tensor:
        """Activations as the SAE sees them (unchanged when normalisation is off)."""
        return acts if self.scale_factor is None else normalize(acts, self.scale_factor)

    def unnormalize(self, acts: Tensor) -> Tensor:
        """Back to the model's units: exactly undoes `normalize`."""
        return acts if self.scale_factor is None else unnormalize(acts, self.scale_factor)

    # ---- batches

    def __iter__(self) -> Iterator[Tensor]:
        """Shuffled [batch_size, d_in] batches until the data runs out (then a final drain).

        The buffer is one tensor of `buffer_tokens` rows, filled in place. When it is full, a
        random half of it is served (each batch gathered from it) and the other half moved to
        its front, in order, block by block; so nothing as large as the buffer is ever copied.
        """
        generator = torch.Generator().manual_seed(self.seed)
        pool = torch.empty(self.buffer_tokens, self.d_in, device=self.device)
        n = 0
        for acts in self.activation_chunks():
            pos = 0
            while pos < len(acts):
                take = min(self.buffer_tokens - n, len(acts) - pos)
                pool[n : n + take] = acts[pos : pos + take]
                n, pos = n + take, pos + take
                if n == self.buffer_tokens:
                    self.peak_buffer_tokens = n
                    n = yield from self._serve(pool, n, generator, drain=False)
        self.peak_buffer_tokens = max(self.peak_buffer_tokens, n)
        yield from self._serve(pool, n, generator, drain=True)

    def _serve(self, pool: Tensor, n: int, generator: torch.Generator,
               drain: bool) -> Generator[Tensor, None, int]:
        """Serve half of pool[:n] (all of it when `drain`) in random batches; keep the rest at
        the front of the pool and return how many rows it kept."""
        perm = torch.randperm(n, generator=generator).to(pool.device)
        n_batches = (n if drain else n // 2) // self.batch_size
        for i in range(n_batches):
            yield self.normalize(pool[perm[i * self.batch_size : (i + 1) * self.batch_size]])
        kept = perm[n_batches * self.batch_size :].sort().values
        block = max(self.batch_size, 1)
        for a in range(0, len(kept), block):  # kept[j] >= j: no row is overwritten unread
            rows = kept[a : a + block]
            pool[a : a + len(rows)] = pool[rows]
        return len(kept)

    def batches(self, n: int | None = None) -> Iterator[Tensor]:
        """The first `n` batches (all of them if None)."""
        for i, batch in enumerate(self):
            if n is not None and i >= n:
                return
            yield batch
