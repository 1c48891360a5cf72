"""An SAE inside the model: plain TransformerLens 4 hooks that splice an SAE into a forward pass.

TransformerLens 4 has no HookedSAETransformer, so this module is the one place where an SAE (or
an edit of its latents) enters a forward pass. Parts 04, 05 and 06 all go through it.

    with spliced(model, sae, "blocks.2.hook_resid_pre") as s:   # reconstruction
        logits = model(tokens)
    with spliced(model, sae, hook, mode="error") as s:           # output unchanged
        model(tokens).logsumexp(-1).sum().backward()             # s.latents.grad is filled
    with model.hooks(fwd_hooks=splice_hooks(model, None, hook, mode="zero")):
        text = model.generate(prompt, do_sample=False)

Modes (x is the activation at the hook, z = sae.encode(x), x_hat = sae.decode(z)):

- ``"reconstruction"``: x becomes x_hat;
- ``"error"``: x becomes x_hat + (x - x_hat).detach(): the same value as x, so the model's output
  does not change, but gradients reach the latents through x_hat;
- ``"zero"``: x becomes 0 (zero-ablation; needs no SAE).

``edit(z) -> z'`` (reconstruction and error modes) changes the latents before decoding: x becomes
decode(z'), plus the detached error term x - x_hat of the unedited latents in error mode, so
that only the edit changes the output (clamping and ablating latents, Templeton et al. 2024).

The BOS position is never touched. It is found from the token ids and position ids of each
forward pass (two small recording hooks on ``embed.hook_in`` and ``pos_embed.hook_in``): a
position is BOS when its token is the BOS token and its position id is 0. That holds under
KV-cached `model.generate` too, where each later step sees one new token at a position > 0, and
for left-padded batches, where the BOS sits after the padding but still has position id 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from sae_course.activations import check_hook_name
from sae_course.sae import SAE

MODES = ("reconstruction", "error", "zero")
TOKENS_HOOK = "embed.hook_in"  # sees the token ids [batch, pos]
POSITIONS_HOOK = "pos_embed.hook_in"  # sees the position ids [batch, pos]

Edit = Callable[[Tensor], Tensor]
HookFn = Callable[[Tensor, Any], Tensor | None]


def bos_mask(tokens: Tensor, bos_token_id: int, positions: Tensor | None = None) -> Tensor:
    """[batch, pos] bool: True where the token is BOS and its position id is 0.

    `positions` defaults to 0, 1, 2, ... along the sequence (a packed, unpadded batch).
    """
    if positions is None:
        positions = torch.arange(tokens.shape[-1], device=tokens.device)
    return (tokens == bos_token_id) & (positions == 0)


class Splice:
    """An SAE spliced into `model` at `hook_name`: the hooks, and what the last forward recorded.

    Args:
        model: a TransformerBridge (see `sae_course.models.load_model`).
        sae: the SAE; None only for ``mode="zero"``.
        hook_name: where to splice, e.g. "blocks.2.hook_resid_pre" (a wrong name gets the list
            of valid ones).
        mode: "reconstruction", "error" or "zero" (see the module docstring).
        edit: optional edit(latents) -> latents applied before decoding; it gets a copy of the
            latents [batch, pos, d_sae], so editing in place is fine.
        skip_bos: leave the BOS position untouched (the course's rule; False splices it too).

    After each forward pass, `latents` holds the SAE's (unedited) latents [batch, pos, d_sae]
    at every position of that pass and `bos` the [batch, pos] mask of the positions left
    untouched. In error mode, with gradients enabled, `latents` keeps its gradient (`.grad`
    after a backward pass). Under `generate` they describe the last step only.
    """

    def __init__(
        self, model: Any, sae: SAE | None, hook_name: str, mode: str = "reconstruction",
        edit: Edit | None = None, skip_bos: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"Unknown splice mode {mode!r}: choose one of {MODES}.")
        if sae is None and mode != "zero":
            raise ValueError(f"mode={mode!r} needs an SAE; only mode='zero' works without one.")
        if edit is not None and mode == "zero":
            raise ValueError("An edit changes latents, but mode='zero' has none: use "
                             "mode='reconstruction' or mode='error' with edit=... .")
        check_hook_name(model, hook_name)
        self.bos_token_id: int | None = None
        if skip_bos:
            missing = [n for n in (TOKENS_HOOK, POSITIONS_HOOK) if n not in model.hook_dict]
            self.bos_token_id = model.tokenizer.bos_token_id
            if missing or self.bos_token_id is None:
                raise ValueError(
                    f"Cannot find the BOS position in this model (hooks missing: {missing}; "
                    f"BOS token id: {self.bos_token_id}). Pass skip_bos=False to splice every "
                    "position."
                )
        self.sae = sae
        self.hook_name = hook_name
        self.mode = mode
        self.edit = edit
        self.latents: Tensor | None = None
        self.bos: Tensor | None = None
        self._tokens: Tensor | None = None  # this pass's token ids, until the positions arrive
        self._pending_bos: Tensor | None = None  # this pass's BOS mask, until the splice runs

    @property
    def fwd_hooks(self) -> list[tuple[str, HookFn]]:
        """The (name, hook function) pairs for `model.hooks(fwd_hooks=...)` or `run_with_hooks`."""
        hooks: list[tuple[str, HookFn]] = [(self.hook_name, self._splice)]
        if self.bos_token_id is not None:
            hooks = [(TOKENS_HOOK, self._record_tokens),
                     (POSITIONS_HOOK, self._record_positions), *hooks]
        return hooks

    # ---- the hook functions

    def _record_tokens(self, tokens: Tensor, hook: Any) -> None:
        self._tokens = tokens

    def _record_positions(self, positions: Tensor, hook: Any) -> None:
        tokens, self._tokens = self._tokens, None
        self._pending_bos = None if tokens is None else bos_mask(
            tokens, self.bos_token_id, positions)  # type: ignore[arg-type]

    def _splice(self, x: Tensor, hook: Any) -> Tensor:
        bos = None
        if self.bos_token_id is not None:
            bos, self._pending_bos = self._pending_bos, None  # a pass without embeddings fails
            if bos is None or bos.shape[-1] != x.shape[1]:
                raise RuntimeError(
                    f"The splice at {self.hook_name!r} could not tell where BOS is in this "
                    "forward pass (the embedding hooks did not run before it). Splice at a hook "
                    "after the embeddings, or pass skip_bos=False."
                )
        out = self._replacement(x)
        if bos is not None:
            self.bos = bos.expand(x.shape[:2])
            keep = self.bos.reshape(self.bos.shape + (1,) * (x.dim() - 2))
            out = torch.where(keep, x, out)
        return out

    def _replacement(self, x: Tensor) -> Tensor:
        if self.mode == "zero":
            return torch.zeros_like(x)
        sae = self.sae
        assert sae is not None  # checked in __init__
        check_fits(sae, x, self.hook_name)
        latents = sae.encode(x)
        if self.mode == "error" and torch.is_grad_enabled():
            if latents.requires_grad:
                latents.retain_grad()
            else:
                latents.requires_grad_(True)
        self.latents = latents
        x_hat = sae.decode(latents)
        if self.edit is not None:
            edited = self.edit(latents.clone())
            if not isinstance(edited, Tensor) or edited.shape != latents.shape:
                got = tuple(edited.shape) if isinstance(edited, Tensor) else type(edited).__name__
                raise ValueError(
                    f"edit(latents) must return latents of shape {tuple(latents.shape)}, got "
                    f"{got}. Did the edit forget to return the latents?"
                )
            out = sae.decode(edited)
        else:
            out = x_hat
        if self.mode == "error":
            out = out + (x - x_hat).detach()
        return out


def check_fits(sae: SAE, x: Tensor, hook_name: str) -> None:
    """Raise one ValueError naming both sides when the activation at a hook does not fit."""
    if x.shape[-1] != sae.cfg.d_in:
        raise ValueError(
            f"The activations at {hook_name!r} have size {x.shape[-1]} (shape {tuple(x.shape)}) "
            f"but the SAE has d_in={sae.cfg.d_in}: the SAE was trained on another hook or model "
            f"(its hook: {sae.cfg.extra.get('hook_name', 'not recorded')})."
        )
    if x.dtype != sae.dtype or x.device != sae.device:
        raise ValueError(
            f"The activations at {hook_name!r} are {x.dtype} on {x.device} but the SAE is "
            f"{sae.dtype} on {sae.device}: move the SAE with sae.to(device=..., dtype=...)."
        )


def splice_hooks(
    model: Any, sae: SAE | None, hook_name: str, mode: str = "reconstruction",
    edit: Edit | None = None, skip_bos: bool = True,
) -> list[tuple[str, HookFn]]:
    """The fwd_hooks list that splices `sae` in (see `Splice` for the arguments).

    Use as `model.hooks(fwd_hooks=splice_hooks(...))` or `model.run_with_hooks(tokens,
    fwd_hooks=[*splice_hooks(...), other_hook])`. Use `Splice` itself to read the latents.
    """
    return Splice(model, sae, hook_name, mode, edit, skip_bos).fwd_hooks


@contextmanager
def spliced(
    model: Any, sae: SAE | None, hook_name: str, mode: str = "reconstruction",
    edit: Edit | None = None, skip_bos: bool = True,
) -> Iterator[Splice]:
    """Within the block, every forward pass of `model` (and `generate`) runs with the splice.

    Yields the `Splice` (its `latents` are those of the last forward). The hooks are removed on
    leaving the block, also when it raises.
    """
    splice = Splice(model, sae, hook_name, mode, edit, skip_bos)
    with model.hooks(fwd_hooks=splice.fwd_hooks):
        yield splice
