"""What one SAE latent does: its activations over text, its examples and its logit lens.

`latent_activations` runs a model over token contexts (StoryWorld's `labelled_contexts`, or any
[n, context_len] token ids), encodes the activations at the SAE's hook, and keeps only the
non-zero latents, column by column (a compressed sparse column layout), so that a latent's
activations over tens of thousands of tokens are one slice. BOS positions are never recorded:
every context starts with one and many latents fire on it for reasons of their own.

From a `LatentActivations`:
- `top_examples`: the highest activations, non-overlapping (no two windows share a token);
- `quantile_examples`: examples drawn from several bands of the activation distribution, so
  a latent is judged by what it usually does, not only by its most extreme cases;
- `density` and `activations_of`: for the firing density and the activation histogram;
- `logit_lens`: which tokens a latent's decoder direction promotes and suppresses when it
  is read straight through the unembedding (W_dec[i] @ W_U).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sae_course.activations import check_hook_name, harvest
from sae_course.sae import SAE

MAX_STORED_ACTIVATIONS = 50_000_000
"""`latent_activations` refuses to keep more non-zero activations than this (about 600 MB)."""


@dataclass
class LatentActivations:
    """The non-zero activations of every latent of an SAE over a set of token contexts.

    tokens: [n_contexts, context_len] the token ids.
    ptr, rows, values: latent i's activations are `values[ptr[i]:ptr[i+1]]` at the flat token
        positions `rows[ptr[i]:ptr[i+1]]` (flat = context * context_len + position), sorted by
        position. BOS positions are never stored.
    counted: [n_contexts, context_len] bool, the tokens that count (all but BOS, or those
        `restrict` kept).
    """

    tokens: Tensor
    ptr: Tensor
    rows: Tensor
    values: Tensor
    counted: Tensor

    @property
    def n_counted(self) -> int:
        return int(self.counted.sum())

    @property
    def d_sae(self) -> int:
        return len(self.ptr) - 1

    @property
    def context_len(self) -> int:
        return self.tokens.shape[1]

    def _check_latent(self, latent: int) -> int:
        if not 0 <= int(latent) < self.d_sae:
            raise IndexError(f"Latent {latent} does not exist: this SAE has latents "
                             f"0..{self.d_sae - 1}.")
        return int(latent)

    def column(self, latent: int) -> tuple[Tensor, Tensor]:
        """(flat positions, activations) where `latent` is non-zero."""
        i = self._check_latent(latent)
        a, b = int(self.ptr[i]), int(self.ptr[i + 1])
        return self.rows[a:b], self.values[a:b]

    def activations_of(self, latent: int) -> Tensor:
        """[n_contexts, context_len] float: the latent's activation at every token (BOS 0)."""
        rows, vals = self.column(latent)
        out = torch.zeros(self.tokens.numel())
        out[rows] = vals
        return out.reshape(self.tokens.shape)

    def entry_latents(self) -> Tensor:
        """The latent of every stored activation (aligned with `rows` and `values`)."""
        return torch.repeat_interleave(torch.arange(self.d_sae), self.firing_counts())

    def firing_counts(self) -> Tensor:
        """[d_sae] how many counted tokens each latent fires on."""
        return self.ptr.diff()

    def density(self) -> Tensor:
        """[d_sae] firing density: the fraction of counted (non-BOS) tokens a latent fires on."""
        return self.firing_counts().float() / max(self.n_counted, 1)

    def fired_matrix(self) -> Tensor:
        """A sparse [d_sae, n_tokens] float matrix of 1s where each latent fires (flat order)."""
        cols = self.entry_latents()
        return torch.sparse_coo_tensor(torch.stack([cols, self.rows]),
                                       torch.ones(len(self.rows)),
                                       (self.d_sae, self.tokens.numel()),
                                       check_invariants=False).coalesce()

    def restrict(self, rows: Tensor) -> LatentActivations:
        """The same activations counted only at the flat positions `rows` (e.g. the tokens of
        held-out stories): elsewhere every latent reads as silent and nothing is counted."""
        keep = torch.zeros(self.tokens.numel(), dtype=torch.bool)
        keep[rows] = True
        keep &= self.counted.reshape(-1)
        cols = self.entry_latents()
        mask = keep[self.rows]
        return _pack(self.tokens, cols[mask], self.rows[mask], self.values[mask], self.d_sae,
                     keep.reshape(self.tokens.shape))


def _pack(tokens: Tensor, cols: Tensor, rows: Tensor, values: Tensor, d_sae: int,
          counted: Tensor) -> LatentActivations:
    order = torch.argsort(cols * tokens.numel() + rows)
    counts = torch.bincount(cols, minlength=d_sae)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    return LatentActivations(tokens, ptr, rows[order], values[order].float(), counted)


@torch.no_grad()
def latent_activations(
    model: Any, sae: SAE, contexts: Any, hook_name: str | None = None, batch_size: int = 16,
    progress: bool = True, activations: Tensor | None = None,
) -> LatentActivations:
    """Encode the activations at the SAE's hook over `contexts` (a `LabelledContexts` or
    [n, context_len] token ids, each context starting with BOS), in batches of contexts.

    The hook defaults to `sae.cfg.extra["hook_name"]`. `activations` [n, context_len, d]: the
    model's activations at that hook over the same contexts, harvested once (e.g. to encode
    them with several SAEs); the model is then not run. Memory: one batch of dense latents at
    a time, plus the non-zero activations kept (refused beyond `MAX_STORED_ACTIVATIONS`).
    """
    tokens = getattr(contexts, "tokens", contexts)
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError("contexts must be a LabelledContexts or a [n, context_len] tensor of "
                         f"token ids; got {type(contexts).__name__}.")
    hook_name = hook_name or sae.cfg.extra.get("hook_name")
    if hook_name is None:
        raise ValueError("This SAE does not record its hook (cfg.extra['hook_name']): pass "
                         "hook_name=..., e.g. 'blocks.2.hook_resid_pre'.")
    if activations is None:
        check_hook_name(model, hook_name)
    elif activations.shape[:2] != tokens.shape:
        raise ValueError(f"activations cover {tuple(activations.shape[:2])} (contexts, positions) "
                         f"but the contexts are {tuple(tokens.shape)}: harvest them from the "
                         "same contexts.")
    cols, rows, vals = [], [], []
    stored = 0
    L = tokens.shape[1]
    for start in tqdm(range(0, len(tokens), batch_size), desc="latent activations",
                      disable=not progress):
        batch = tokens[start:start + batch_size]
        acts = (harvest(model, batch, hook_name) if activations is None
                else activations[start:start + batch_size]).to(sae.device, sae.dtype)
        lat = sae.encode(acts)
        lat[:, 0] = 0  # BOS
        c, p, j = lat.nonzero(as_tuple=True)
        stored += len(c)
        if stored > MAX_STORED_ACTIVATIONS:
            raise MemoryError(
                f"More than {MAX_STORED_ACTIVATIONS:,} non-zero activations after "
                f"{start + len(batch)} contexts: pass fewer contexts (or a sparser SAE)."
            )
        rows.append((c + start) * L + p)
        cols.append(j)
        vals.append(lat[c, p, j].float().cpu())
    counted = torch.ones(tokens.shape, dtype=torch.bool)
    counted[:, 0] = False
    return _pack(tokens, torch.cat(cols).cpu(), torch.cat(rows).cpu(), torch.cat(vals),
                 sae.cfg.d_sae, counted)


# --------------------------------------------------------------------------- examples


@dataclass
class Example:
    """A window of one context around the token where a latent fired.

    tokens / activations: the window's token ids and the latent's activation on each;
    focus: the index in the window of the token the example is about.
    """

    context: int
    position: int
    activation: float
    tokens: list[int]
    activations: list[float]
    focus: int

    def labels(self, contexts: Any) -> dict[str, Any]:
        """The focus token's StoryWorld labels, from the `LabelledContexts` it came from."""
        return contexts.labels[self.context][self.position]


def make_example(acts: LatentActivations, latent: int, context: int, position: int,
                 window: tuple[int, int] = (12, 4), dense: Tensor | None = None) -> Example:
    """The `Example` of `latent` at (context, position), with `window` = (tokens before, after)."""
    dense = acts.activations_of(latent) if dense is None else dense
    lo, hi = max(1, position - window[0]), min(acts.context_len, position + window[1] + 1)
    return Example(context, position, float(dense[context, position]),
                   acts.tokens[context, lo:hi].tolist(), dense[context, lo:hi].tolist(),
                   position - lo)


def top_positions(activations: Tensor, n: int, width: int) -> list[tuple[int, int]]:
    """(context, position) of the `n` highest non-zero entries of `activations` [n_contexts,
    context_len], highest first, no two in the same context `width` or fewer tokens apart.

    Greedy: go down the activations from the highest, skipping one too close to an entry
    already taken. Ties go to the earlier token (in flat order).
    """
    L = activations.shape[1]
    flat = activations.reshape(-1)
    rows = flat.nonzero()[:, 0]
    order = rows[torch.argsort(-flat[rows], stable=True)]
    taken: list[tuple[int, int]] = []
    for r in order.tolist():
        c, p = divmod(r, L)
        if all(c != tc or abs(p - tp) > width for tc, tp in taken):
            taken.append((c, p))
            if len(taken) == n:
                break
    return taken


def top_examples(acts: LatentActivations, latent: int, n: int = 10,
                 window: tuple[int, int] = (12, 4)) -> list[Example]:
    """The `n` highest activations of `latent` whose windows do not overlap, highest first
    (see `top_positions`: two windows overlap when their tokens are closer than the
    window's width)."""
    dense = acts.activations_of(latent)
    return [make_example(acts, latent, c, p, window, dense)
            for c, p in top_positions(dense, n, window[0] + window[1])]


def quantile_bands(values: Tensor, n_bands: int) -> Tensor:
    """Band index (0 = lowest) of each activation: `n_bands` bands of equal counts."""
    if n_bands < 1:
        raise ValueError(f"n_bands must be >= 1, got {n_bands}.")
    ranks = torch.argsort(torch.argsort(values, stable=True), stable=True)
    return (ranks * n_bands) // max(len(values), 1)


def quantile_examples(acts: LatentActivations, latent: int, n_bands: int = 4,
                      per_band: int = 3, seed: int = 0, window: tuple[int, int] = (12, 4)
                      ) -> dict[int, list[Example]]:
    """`per_band` random examples from each of `n_bands` bands of the latent's non-zero
    activations (bands of equal counts, 0 the weakest), drawn with a seeded generator."""
    rows, vals = acts.column(latent)
    bands = quantile_bands(vals, n_bands)
    gen = torch.Generator().manual_seed(seed)
    dense = acts.activations_of(latent)
    L = acts.context_len
    out: dict[int, list[Example]] = {}
    for b in range(n_bands):
        members = rows[bands == b]
        pick = members[torch.randperm(len(members), generator=gen)[:per_band]]
        out[b] = [make_example(acts, latent, *divmod(int(r), L), window, dense)
                  for r in pick.tolist()]
    return out


# --------------------------------------------------------------------------- logit lens


@dataclass
class LogitLens:
    """The tokens a latent's decoder direction most promotes (top) and suppresses (bottom)."""

    latent: int
    top_tokens: list[str]
    top_values: list[float]
    bottom_tokens: list[str]
    bottom_values: list[float]


def decoder_logits(W_dec: Tensor, W_U: Tensor, latent: int) -> Tensor:
    """[d_vocab] W_dec[latent] @ W_U: the direct effect of the latent on the logits."""
    if W_dec.shape[1] != W_U.shape[0]:
        raise ValueError(f"The SAE writes {W_dec.shape[1]} dimensions but the unembedding reads "
                         f"{W_U.shape[0]}: is this SAE for this model?")
    return W_dec[latent].float() @ W_U.float()


@torch.no_grad()
def logit_lens(sae: SAE, model: Any, latent: int, k: int = 10) -> LogitLens:
    """The top and bottom `k` tokens of `decoder_logits` for one latent."""
    logits = decoder_logits(sae.W_dec.detach().cpu(), model.W_U.detach().cpu(), latent)
    top = logits.topk(k)
    bottom = (-logits).topk(k)
    names = model.tokenizer.convert_ids_to_tokens
    return LogitLens(int(latent), _readable(names(top.indices.tolist())), top.values.tolist(),
                     _readable(names(bottom.indices.tolist())), (-bottom.values).tolist())


def _readable(tokens: Sequence[str]) -> list[str]:
    """GPT-2 byte-level tokens as text ("Ġ" is a leading space)."""
    return [t.replace("Ġ", " ").replace("Ċ", "\\n") for t in tokens]


# --------------------------------------------------------------------------- showing examples


def example_text(example: Example, tokenizer: Any) -> str:
    """The window as text, the focus token in [[double brackets]]."""
    pieces = [tokenizer.decode([t]) for t in example.tokens]
    pieces[example.focus] = f"[[{pieces[example.focus]}]]"
    return "".join(pieces).replace("\n", " ")


def example_html(example: Example, tokenizer: Any, scale: float | None = None) -> str:
    """The window as HTML: each token shaded by its activation (relative to `scale`, default
    the window's maximum), the focus token underlined."""
    scale = scale or max(max(example.activations), 1e-9)
    spans = []
    for i, (t, a) in enumerate(zip(example.tokens, example.activations, strict=True)):
        alpha = min(max(a / scale, 0.0), 1.0)
        style = f"background: rgba(255, 140, 0, {alpha:.2f});"
        if i == example.focus:
            style += " text-decoration: underline; font-weight: bold;"
        text = html.escape(tokenizer.decode([t])).replace(" ", "&nbsp;")
        spans.append(f'<span style="{style}" title="{a:.2f}">{text}</span>')
    return "<span style='font-family: monospace'>" + "".join(spans) + "</span>"
