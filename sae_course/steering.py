"""Steering a model with directions and SAE latents, and measuring what it buys and what it costs.

Interventions are plain TransformerLens 4 hooks, built on `sae_course.splice` (so the BOS
position is found and left alone in the same way as there):

- `AddDirection` / `steering(...)`: x becomes x + alpha * v at every position but BOS;
- `clamp(...)` / `clamped(...)`: latent i is set to a value. The SAE encodes x, the latent is
  overwritten, the latents are decoded, and the SAE's error x - x_hat is added back, so the
  only change to x is (value - z_i) * W_dec[i] (Templeton et al. 2024);
- `ablate(...)` / `ablated(...)`: the same with the latents set to 0.

Under TransformerLens 4's KV-cached `model.generate`, the first forward pass sees the whole
prompt and every later one sees only the newest token, [batch, 1, d]. A hook that indexes
absolute positions, or that acts only when it sees more than one position, steers the prompt
and silently leaves every generated token alone. These hooks act on whatever positions a pass
holds, and tell BOS apart by its token id and its position id 0 (recorded from the embedding
hooks of the same pass), never by its index.

`generate` runs greedy decoding, or seeded sampling (TransformerLens' `generate` takes no
torch.Generator, so the global RNG is seeded inside `torch.random.fork_rng`, which restores it).

Evaluation (one small function per measure):

- success: the share of continuations a StoryWorld scorer assigns to the target concept
  (`success_rate`, with `SCORERS` for topic, subtopic, sentiment and tense), on continuations
  of neutral prompts (`neutral_prompt`: the opening of a story before any topic or sentiment
  word) drawn from seeds kept apart from those used to choose alpha;
- cost: `intervention_cost` (the increase of next-token cross-entropy and KL(clean || steered)
  on held-out StoryWorld text with the intervention at every position), `continuation_perplexity`
  (how likely the clean model finds the steered continuations), `repetition_rate` and
  `well_formed_fraction`.

Directions to compare: an SAE decoder row (`decoder_direction`), `difference_of_means` and
`random_direction` (seeded, of the same norm).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sae_course.evaluation import kl_divergence, next_token_loss
from sae_course.sae import SAE
from sae_course.splice import Splice, bos_mask
from sae_course.storyworld.grammar import Story
from sae_course.storyworld.scorers import (
    classify_sentiment,
    classify_subtopic,
    classify_tense,
    classify_topic,
    sentence_validity,
)

HookFn = Callable[[Tensor, Any], Tensor | None]
FwdHooks = list[tuple[str, HookFn]]

SCORERS: dict[str, Callable[[str], str | None]] = {
    "topic": classify_topic,
    "subtopic": classify_subtopic,
    "sentiment": classify_sentiment,
    "tense": classify_tense,
}
"""The StoryWorld scorer of each steerable concept: text -> its value (or None)."""

D_MODEL_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out",
                 "hook_mlp_out")
"""Hooks whose activations have the model's width, so a direction can be checked up front."""


# ------------------------------------------------------------------------------ interventions


class AddDirection(Splice):
    """x -> x + alpha * direction at `hook_name`, at every position but BOS.

    `direction`: [d] with d the size of the activation at the hook. The hook adds to whatever
    positions the forward pass holds (the whole prompt, or the one new token of a cached
    generation step), so prompt and generated tokens are steered alike.
    """

    def __init__(self, model: Any, hook_name: str, direction: Tensor, alpha: float = 1.0,
                 skip_bos: bool = True) -> None:
        super().__init__(model, None, hook_name, mode="zero", skip_bos=skip_bos)
        self.mode = "add"
        direction = torch.as_tensor(direction)
        if direction.ndim != 1:
            raise ValueError(f"direction must be one vector [d], got shape "
                             f"{tuple(direction.shape)}.")
        if hook_name.endswith(D_MODEL_HOOKS) and direction.shape[0] != model.cfg.d_model:
            raise ValueError(_size_message(hook_name, model.cfg.d_model, direction.shape[0]))
        self.direction = direction
        self.alpha = float(alpha)

    def _replacement(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.direction.shape[0]:
            raise ValueError(_size_message(self.hook_name, x.shape[-1], self.direction.shape[0]))
        return x + self.alpha * self.direction.to(device=x.device, dtype=x.dtype)


def _size_message(hook_name: str, d_hook: int, d_direction: int) -> str:
    return (f"The direction has size {d_direction} but the activations at {hook_name!r} have "
            f"size {d_hook}: build the direction at this hook (or pick the hook it came from).")


def _sae_hook(sae: SAE, hook_name: str | None) -> str:
    hook_name = hook_name or sae.cfg.extra.get("hook_name")
    if hook_name is None:
        raise ValueError("Which hook does this SAE read? Pass hook_name='blocks.L.hook_...'.")
    return hook_name


def _latent_index(sae: SAE, latents: int | Sequence[int] | Tensor) -> Tensor:
    index = torch.as_tensor(latents, dtype=torch.long).reshape(-1)
    bad = index[(index < 0) | (index >= sae.cfg.d_sae)]
    if len(bad):
        raise IndexError(f"Latents {bad.tolist()} do not exist: this SAE has latents "
                         f"0..{sae.cfg.d_sae - 1}.")
    return index


def clamp(model: Any, sae: SAE, latents: int | Sequence[int] | Tensor,
          values: float | Sequence[float] | Tensor, hook_name: str | None = None,
          skip_bos: bool = True) -> Splice:
    """A splice that sets `latents` to `values` at every position but BOS, keeping the SAE's
    error term, so x changes by exactly sum_i (value_i - z_i) W_dec[i]."""
    index = _latent_index(sae, latents)
    target = torch.as_tensor(values, dtype=sae.dtype, device=sae.device).expand(len(index))

    def edit(z: Tensor) -> Tensor:
        z[..., index.to(z.device)] = target.to(z.dtype)
        return z

    return Splice(model, sae, _sae_hook(sae, hook_name), mode="error", edit=edit,
                  skip_bos=skip_bos)


def ablate(model: Any, sae: SAE, latents: int | Sequence[int] | Tensor,
           hook_name: str | None = None, skip_bos: bool = True) -> Splice:
    """A splice that zeroes `latents` (error term kept): x loses sum_i z_i W_dec[i]."""
    return clamp(model, sae, latents, 0.0, hook_name, skip_bos)


def fwd_hooks_of(interventions: Sequence[Any]) -> FwdHooks:
    """The fwd_hooks of several interventions (each a `Splice`, or a (name, fn) pair)."""
    hooks: FwdHooks = []
    for item in interventions:
        if isinstance(item, tuple):
            hooks.append(item)
        elif hasattr(item, "fwd_hooks"):
            hooks.extend(item.fwd_hooks)
        else:
            raise TypeError(f"An intervention must be a Splice (e.g. AddDirection, clamp(...)) "
                            f"or a (hook_name, hook_fn) pair, got {type(item).__name__}.")
    return hooks


@contextmanager
def intervening(model: Any, interventions: Sequence[Any]) -> Iterator[None]:
    """Within the block, every forward pass (and `generate`) runs with the interventions; the
    hooks are removed on leaving it, also when it raises."""
    with model.hooks(fwd_hooks=fwd_hooks_of(interventions)):
        yield


@contextmanager
def steering(model: Any, hook_name: str, direction: Tensor, alpha: float = 1.0,
             skip_bos: bool = True) -> Iterator[AddDirection]:
    """`with steering(model, "blocks.2.hook_resid_pre", v, alpha=8): model.generate(...)`."""
    add = AddDirection(model, hook_name, direction, alpha, skip_bos)
    with intervening(model, [add]):
        yield add


@contextmanager
def clamped(model: Any, sae: SAE, latents: int | Sequence[int] | Tensor,
            values: float | Sequence[float] | Tensor, hook_name: str | None = None,
            skip_bos: bool = True) -> Iterator[Splice]:
    """The block runs with `latents` clamped to `values` (see `clamp`)."""
    splice = clamp(model, sae, latents, values, hook_name, skip_bos)
    with intervening(model, [splice]):
        yield splice


@contextmanager
def ablated(model: Any, sae: SAE, latents: int | Sequence[int] | Tensor,
            hook_name: str | None = None, skip_bos: bool = True) -> Iterator[Splice]:
    """The block runs with `latents` zeroed, error term kept (see `ablate`)."""
    splice = ablate(model, sae, latents, hook_name, skip_bos)
    with intervening(model, [splice]):
        yield splice


# ------------------------------------------------------------------------------ generation


@torch.no_grad()
def generate(
    model: Any, prompt_tokens: Tensor, max_new_tokens: int, interventions: Sequence[Any] = (),
    seed: int | None = None, temperature: float = 1.0, top_k: int | None = None,
    attention_mask: Tensor | None = None, stop_at_eos: bool = False,
    use_past_kv_cache: bool = True,
) -> Tensor:
    """Prompt plus continuation, [batch, pos + max_new_tokens] token ids (or fewer columns
    when `stop_at_eos` ends every row early), generated with the interventions on.

    `seed=None`: greedy decoding. An int: sampling at `temperature` (and `top_k`), with torch's
    global RNG seeded inside `torch.random.fork_rng`, so the same seed gives the same tokens
    and the caller's random state is left as it was. A left-padded batch needs its
    `attention_mask` (see `pad_left`).
    """
    if prompt_tokens.ndim == 1:
        prompt_tokens = prompt_tokens[None]
    if prompt_tokens.ndim != 2 or prompt_tokens.is_floating_point():
        raise ValueError(f"prompt_tokens must be [batch, pos] token ids, got shape "
                         f"{tuple(prompt_tokens.shape)} of {prompt_tokens.dtype}.")
    kwargs: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens, do_sample=seed is not None, temperature=temperature,
        top_k=top_k, stop_at_eos=stop_at_eos, use_past_kv_cache=use_past_kv_cache,
        return_type="tokens", verbose=False,
    )
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    device = torch.device(model.cfg.device)
    devices = [device] if device.type == "cuda" else []
    with intervening(model, interventions), torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        return model.generate(prompt_tokens.to(device), **kwargs)


def pad_left(sequences: Sequence[Tensor], pad_id: int) -> tuple[Tensor, Tensor]:
    """(tokens, attention_mask), both [batch, max_len]: the sequences left-padded with
    `pad_id`, mask 1 on real tokens, for batched generation of prompts of unequal length."""
    width = max(len(s) for s in sequences)
    tokens = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        tokens[i, width - len(s):] = s
        mask[i, width - len(s):] = 1
    return tokens, mask


def continuations(
    model: Any, prompts: Sequence[str], max_new_tokens: int, interventions: Sequence[Any] = (),
    seed: int | None = None, batch_size: int = 32, **kwargs: Any,
) -> list[Tensor]:
    """The generated tokens of each prompt (BOS-led, left-padded in batches), each cut before
    the first end-of-text token: a story ends there and another one would begin."""
    eos = model.tokenizer.eos_token_id
    out: list[Tensor] = []
    for start in range(0, len(prompts), batch_size):
        batch = [model.to_tokens(p, prepend_bos=True, move_to_device=False)[0]
                 for p in prompts[start:start + batch_size]]
        tokens, mask = pad_left(batch, model.tokenizer.pad_token_id or 0)
        seed_i = None if seed is None else seed + start
        full = generate(model, tokens, max_new_tokens, interventions, seed=seed_i,
                        attention_mask=mask if not bool(mask.all()) else None, **kwargs)
        for row in full[:, tokens.shape[1]:].cpu():
            ends = (row == eos).nonzero()
            out.append(row[: int(ends[0])] if len(ends) else row)
    return out


# ------------------------------------------------------------------------------ prompts


def neutral_prompt(story: Story) -> str | None:
    """The story's opening up to the last whole sentence before its first topic or sentiment
    word (the facts about the hero): a prompt that does not give the topic away. None when the
    first sentence already has such a word."""
    end, previous = None, None
    for span in story.spans:
        labels = span.labels
        if previous is not None and labels["sentence"] != previous.labels["sentence"]:
            end = previous.end  # the previous sentence is complete and had no such word
        if labels["topic_word"] is not None or labels["sentiment_word"] is not None:
            break
        previous = span
    return story.text[:end] if end else None


def neutral_prompts(stories: Sequence[Story]) -> list[str]:
    """`neutral_prompt` of each story that has one."""
    return [p for p in map(neutral_prompt, stories) if p]


# ------------------------------------------------------------------------------ success


def success_rate(texts: Sequence[str], concept: str, target: str) -> float:
    """The share of `texts` the StoryWorld scorer of `concept` assigns to `target`."""
    if concept not in SCORERS:
        raise ValueError(f"Unknown concept {concept!r}: choose one of {', '.join(SCORERS)}.")
    if not texts:
        return float("nan")
    scorer = SCORERS[concept]
    return sum(scorer(t) == target for t in texts) / len(texts)


# ------------------------------------------------------------------------------ cost


@dataclass
class InterventionCost:
    """Next-token cross-entropy (nats) on held-out text, clean and with the intervention at
    every position, and KL(clean || steered) averaged over the predictions made at non-BOS
    positions."""

    ce_clean: float
    ce_steered: float
    kl: float
    n_predictions: int

    @property
    def ce_increase(self) -> float:
        return self.ce_steered - self.ce_clean


@torch.no_grad()
def intervention_cost(model: Any, tokens: Tensor, interventions: Sequence[Any],
                      batch_size: int = 16) -> InterventionCost:
    """The `InterventionCost` of `interventions` on BOS-led contexts `tokens` [n, pos]."""
    bos_id = model.tokenizer.bos_token_id
    ce_clean = ce_steered = kl = 0.0
    n = 0
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start:start + batch_size].to(model.cfg.device)
        clean = model(batch)
        with intervening(model, interventions):
            steered = model(batch)
        predicted = ~bos_mask(batch, bos_id)[:, :-1]
        ce_clean += float(next_token_loss(clean, batch)[predicted].double().sum())
        ce_steered += float(next_token_loss(steered, batch)[predicted].double().sum())
        kl += float(kl_divergence(clean[:, :-1], steered[:, :-1])[predicted].double().sum())
        n += int(predicted.sum())
    return InterventionCost(ce_clean / n, ce_steered / n, kl / n, n)


@torch.no_grad()
def continuation_perplexity(model: Any, prompts: Sequence[Tensor],
                            continuations_: Sequence[Tensor]) -> float:
    """exp of the clean model's mean next-token loss on the continuation tokens, each given
    its prompt (BOS-led token ids), pooled over every continuation token."""
    total, count = 0.0, 0
    for prompt, cont in zip(prompts, continuations_, strict=True):
        if len(cont) == 0:
            continue
        seq = torch.cat([prompt, cont])[None].to(model.cfg.device)
        loss = next_token_loss(model(seq), seq)[0, len(prompt) - 1:]
        total += float(loss.double().sum())
        count += len(loss)
    return math.exp(total / count) if count else float("nan")


SENTENCE_ENDS = (".", "!", "?", '."', '!"', '?"')
"""How a complete sentence ends (a closing quote alone may sit mid-sentence: '"Hot," said')."""

_WORD = re.compile(r"[A-Za-z]+|\d+|[.,!?:\"]")


def repetition_rate(text: str, n: int = 2) -> float:
    """The share of the text's word n-grams that repeat an n-gram seen earlier in it:
    1 - distinct n-grams / n-grams (1 - distinct-n). 0 for text with no repeat, and for text
    with no n-gram at all; words and punctuation marks both count as words."""
    words = [w.lower() for w in _WORD.findall(text)]
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def well_formed_fraction(texts: Sequence[str]) -> float:
    """The share of complete sentences, pooled over `texts`, that are well-formed StoryWorld
    sentences. A trailing sentence cut off by the token budget is not counted (nan when no
    text has a complete sentence)."""
    good = total = 0
    for text in texts:
        verdicts = sentence_validity(text)
        if verdicts and not verdicts[-1][0].endswith(SENTENCE_ENDS):
            verdicts = verdicts[:-1]
        good += sum(ok for _, ok in verdicts)
        total += len(verdicts)
    return good / total if total else float("nan")


# ------------------------------------------------------------------------------ directions


def decoder_direction(sae: SAE, latent: int) -> Tensor:
    """The SAE's decoder row of `latent`, [d_in] (what the latent adds per unit activation)."""
    index = int(_latent_index(sae, latent)[0])
    return sae.W_dec[index].detach().clone()


def difference_of_means(resid: Tensor, mask: Tensor) -> Tensor:
    """mean(resid[mask]) - mean(resid[~mask]): [d], from resid [..., d] and a bool mask of its
    leading shape (e.g. True on tokens of stories about the target topic)."""
    mask = mask.bool()
    if mask.shape != resid.shape[:-1]:
        raise ValueError(f"mask has shape {tuple(mask.shape)} but resid has {tuple(resid.shape)}"
                         f": the mask must cover resid's leading dimensions "
                         f"{tuple(resid.shape[:-1])}.")
    n_in, n_out = int(mask.sum()), int((~mask).sum())
    if n_in == 0 or n_out == 0:
        raise ValueError(f"difference_of_means needs rows on both sides of the mask (got "
                         f"{n_in} in and {n_out} out).")
    flat = resid.reshape(-1, resid.shape[-1]).double()
    m = mask.reshape(-1)
    return (flat[m].mean(0) - flat[~m].mean(0)).to(resid.dtype)


def random_direction(like: Tensor, seed: int) -> Tensor:
    """A random direction (Gaussian, seeded) with the norm, size and dtype of `like`."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(like.shape, generator=gen, dtype=torch.float64)
    return (v * like.double().norm() / v.norm()).to(like.dtype).to(like.device)
