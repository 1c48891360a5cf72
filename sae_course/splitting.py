"""Feature splitting and absorption: how a dictionary's latents change as it grows.

Splitting (Bricken et al. 2023, "Towards Monosemanticity"): a latent of a narrow SAE often
becomes several latents of a wider one, each a more specific case of it. `match_latents`
pairs latents of two SAEs by the cosine of their decoder rows, and `split_children` lists the
latents of the wider SAE whose closest latent in the narrower one is a given parent.

Absorption (Chanin et al. 2024, arXiv 2409.14507): when a child feature always implies its
parent ("Mara" implies "a character's name"), a sparse SAE can save an active latent by
folding the parent into the child's latent; the parent latent then goes silent exactly where
the child fires. `absorption` measures it on StoryWorld's hierarchy of labels: on the tokens
where the child holds, how often the parent's best latent is silent while the child's best
latent fires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from sae_course.features import LatentActivations


def decoder_cosines(W_a: Tensor, W_b: Tensor) -> Tensor:
    """[d_a, d_b] cosine similarity of every decoder row of one SAE with every row of another."""
    if W_a.shape[1] != W_b.shape[1]:
        raise ValueError(f"The decoders write {W_a.shape[1]} and {W_b.shape[1]} dimensions: "
                         "match SAEs trained on the same hook.")
    a = torch.nn.functional.normalize(W_a.detach().float(), dim=-1)
    b = torch.nn.functional.normalize(W_b.detach().float(), dim=-1)
    return a @ b.T


def match_latents(W_a: Tensor, W_b: Tensor) -> tuple[Tensor, Tensor]:
    """For every latent of SAE a: (best cosine, index of its closest latent in SAE b)."""
    return decoder_cosines(W_a, W_b).max(dim=1)


def counterpart_fraction(W_a: Tensor, W_b: Tensor, threshold: float = 0.9) -> float:
    """Share of a's latents with a counterpart in b (decoder cosine >= threshold)."""
    best, _ = match_latents(W_a, W_b)
    return float((best >= threshold).float().mean())


def split_children(W_narrow: Tensor, W_wide: Tensor, parent: int, min_cosine: float = 0.5
                   ) -> list[tuple[int, float]]:
    """The latents of the wider SAE whose closest narrow latent is `parent` (with a decoder
    cosine of at least `min_cosine`), as (index, cosine), closest first."""
    best, index = match_latents(W_wide, W_narrow)
    mine = ((index == parent) & (best >= min_cosine)).nonzero()[:, 0]
    order = torch.argsort(best[mine], descending=True)
    return [(int(i), float(best[i])) for i in mine[order]]


@dataclass
class Absorption:
    """Absorption of one (parent, child) label pair by one SAE."""

    parent: str
    child: str
    parent_latent: int
    child_latent: int
    n_child_tokens: int
    parent_silent: float  # share of child tokens where the parent latent is silent
    absorbed: float  # ... silent while the child latent fires


def absorption_rate(parent_fires: Tensor, child_fires: Tensor, child_holds: Tensor
                    ) -> tuple[float, float]:
    """(share of child tokens where the parent latent is silent, share where it is silent and
    the child latent fires), over the tokens where `child_holds` ([n] bool each)."""
    n = int(child_holds.sum())
    if n == 0:
        raise ValueError("The child label never holds on these tokens: nothing to measure.")
    silent = child_holds & ~parent_fires
    return float(silent.sum()) / n, float((silent & child_fires).sum()) / n


def absorption(acts: LatentActivations, labels: Tensor, names: Sequence[str],
               pairs: Sequence[tuple[str, str]], f1: Tensor) -> list[Absorption]:
    """Absorption of every (parent, child) pair of label names.

    labels: [n_tokens, n_labels] bool in the flat order of `acts`; f1: [d_sae, n_labels] (from
    `scorecard.label_scores`) picks each label's best latent (the child's best latent other
    than the parent's).
    """
    index = {n: j for j, n in enumerate(names)}
    missing = [n for pair in pairs for n in pair if n not in index]
    if missing:
        raise ValueError(f"Labels {sorted(set(missing))} are not among the scored labels.")
    out = []
    for parent, child in pairs:
        p, c = index[parent], index[child]
        p_latent = int(f1[:, p].argmax())
        child_f1 = f1[:, c].clone()
        child_f1[p_latent] = -1
        c_latent = int(child_f1.argmax())
        holds = labels[:, c]
        if not bool(holds.any()):
            continue
        p_fires = acts.activations_of(p_latent).reshape(-1) > 0
        c_fires = acts.activations_of(c_latent).reshape(-1) > 0
        silent, absorbed = absorption_rate(p_fires, c_fires, holds)
        out.append(Absorption(parent, child, p_latent, c_latent, int(holds.sum()), silent,
                              absorbed))
    return out
