"""Data whose features are known, to check that an SAE recovers them.

`SyntheticFeatures`: n_features random unit directions in d dimensions (more features than
dimensions: superposition); each token is a sparse non-negative combination of them. Options:
per-feature firing probabilities, magnitudes that decay with the feature index ("importance")
and correlated groups of features that tend to fire together.

`toy_model_activations`: the hidden activations h = W x of a Part 01 toy model
(`sae_course.toy_models.ToyModel`), with the true feature directions (the columns of W).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sae_course.settings import stream_generator

FEATURES_STREAM = "synthetic.features"
"""The stream key of the feature directions (and offset): never the SAE's "sae.init"."""


class SyntheticFeatures:
    """Known features in superposition.

    A token is x = sum_i f_i * magnitude_i * direction_i with f_i ~ U[0, 1] when feature i
    fires (probability p_i) and 0 otherwise. `magnitude_i = importance_decay ** i`.
    With `correlation > 0`, features come in groups of `group_size`: when any feature of a
    group fires, each other feature of the group also fires with probability `correlation`
    (this raises the firing rates above p). Directions are random unit vectors drawn from
    `stream_generator(FEATURES_STREAM, seed)`: a stream of their own, so an SAE built with the
    same seed does not start at the answer.
    `offset` adds a constant vector of that norm to every token (a mean away from the origin,
    as language-model activations have; it is what b_dec is for).
    """

    def __init__(self, n_features: int = 64, d: int = 32,
                 feature_probability: float | Tensor = 0.05,
                 importance_decay: float = 1.0, correlation: float = 0.0, group_size: int = 4,
                 offset: float = 0.0, seed: int = 0, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        if n_features <= 0 or d <= 0:
            raise ValueError(f"n_features and d must be positive, got {n_features}, {d}.")
        if not 0 <= correlation <= 1:
            raise ValueError(f"correlation must be in [0, 1], got {correlation}.")
        if importance_decay <= 0:
            raise ValueError(f"importance_decay must be > 0, got {importance_decay}.")
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}.")
        p = torch.as_tensor(feature_probability, dtype=torch.float32).expand(n_features).clone()
        if (p < 0).any() or (p > 1).any():
            raise ValueError("feature_probability must lie in [0, 1].")
        gen = stream_generator(FEATURES_STREAM, seed)
        directions = torch.randn(n_features, d, generator=gen, dtype=torch.float64)
        directions = directions / directions.norm(dim=-1, keepdim=True)
        self.n_features, self.d = n_features, d
        self.features = directions.to(device=device, dtype=dtype)  # [n_features, d]
        self.feature_probability = p.to(device)
        self.magnitude = (importance_decay ** torch.arange(n_features, dtype=torch.float64)).to(
            device=device, dtype=dtype)
        self.correlation, self.group_size = correlation, group_size
        mean_dir = torch.randn(d, generator=gen, dtype=torch.float64)
        self.offset = (offset * mean_dir / mean_dir.norm()).to(device=device, dtype=dtype)
        self.device, self.dtype = torch.device(device), dtype

    def sample_features(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Feature activations [n, n_features] (values * magnitudes, zero where not firing)."""
        gdev = generator.device if generator is not None else self.device
        values = torch.rand(n, self.n_features, generator=generator, device=gdev)
        fires = torch.rand(n, self.n_features, generator=generator, device=gdev) < \
            self.feature_probability.to(gdev)
        if self.correlation > 0:
            g = self.group_size
            n_groups = -(-self.n_features // g)
            padded = torch.zeros(n, n_groups * g, dtype=torch.bool, device=gdev)
            padded[:, : self.n_features] = fires
            group_on = padded.reshape(n, n_groups, g).any(-1).repeat_interleave(g, -1)
            follow = torch.rand(n, n_groups * g, generator=generator, device=gdev)
            follow = follow < self.correlation
            fires = fires | (group_on & follow)[:, : self.n_features]
        f = values * fires
        return f.to(device=self.device, dtype=self.dtype) * self.magnitude

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(x [n, d], feature activations [n, n_features])."""
        f = self.sample_features(n, generator)
        return f @ self.features + self.offset, f


def toy_model_activations(model, n: int, instance: int = 0,
                          generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Hidden activations h = W x [n, d_hidden] of one instance of a Part 01 ToyModel, and the
    features x [n, n_features] that produced them (drawn with `model.generate_batch`)."""
    with torch.no_grad():
        features = model.generate_batch(n, generator)  # [n, n_inst, n_features]
        W = model.W[instance]  # [d_hidden, n_features]
        f = features[:, instance]
        return f @ W.t(), f


def toy_model_features(model, instance: int = 0) -> Tensor:
    """The true feature directions of one toy-model instance in hidden space.

    W^T: [n_features, d_hidden]."""
    return model.W[instance].detach().t().clone()
