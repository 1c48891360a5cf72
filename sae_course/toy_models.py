"""Toy models of superposition (Elhage et al. 2022, arXiv 2209.10652).

The reference implementation behind notebook 01. A toy model squeezes `n_features` sparse
features through `d_hidden < n_features` dimensions and back:

    h = W x,    x' = ReLU(W^T h + b)

Many models ("instances") are trained at once: every weight has a leading instance
dimension, so `W` is `[n_inst, d_hidden, n_features]`, `b_final` is `[n_inst, n_features]` and
a batch of features is `[batch, n_inst, n_features]`. Each instance has its own feature
probability and importance, so one run sweeps sparsity (or importance) in parallel.

Loss convention: the importance-weighted squared error is averaged over the batch, summed over
features (weighted by importance, as in the paper) and **summed over instances**. Summing
keeps every instance's gradient exactly what it would be if that instance were trained alone,
so a batched run equals separate runs on the same data (see `tests/test_toy_models.py`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sae_course.settings import cpu_threads

Number = float | int
TableLike = Number | Sequence | Tensor


# --------------------------------------------------------------------------- input checks


def as_table(
    value: TableLike,
    n_inst: int,
    n_features: int,
    name: str,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Broadcast a float, a `[n_features]` row, an `[n_inst, 1]` column or a full table to
    a `[n_inst, n_features]` tensor; raise a ValueError that names `name` otherwise."""
    t = torch.as_tensor(value, dtype=dtype, device=device).detach()
    try:
        return torch.broadcast_to(t, (n_inst, n_features)).clone()
    except RuntimeError:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}, which does not broadcast to "
            f"(n_inst, n_features) = ({n_inst}, {n_features}). Give a float, a row of "
            f"{n_features} values (one per feature), a column of shape ({n_inst}, 1) "
            "(one per instance) or the full table."
        ) from None


def check_probability(p: Tensor, name: str = "feature_probability", upper: float = 1.0) -> None:
    """Raise a ValueError unless every entry of `p` lies in [0, upper]."""
    if not torch.is_tensor(p):
        p = torch.as_tensor(p, dtype=torch.float32)
    if p.numel() and (torch.isnan(p).any() or p.min() < 0 or p.max() > upper):
        raise ValueError(
            f"{name} must lie in [0, {upper:g}]; got values from {p.min().item():.4g} to "
            f"{p.max().item():.4g}."
        )


def check_features(features: Tensor, n_inst: int, n_features: int) -> None:
    """Raise a ValueError unless `features` is `[batch, n_inst, n_features]`."""
    if not torch.is_tensor(features):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}.")
    if features.ndim != 3:
        raise ValueError(
            f"features should have shape (batch, n_inst, n_features) = (batch, {n_inst}, "
            f"{n_features}); got shape {tuple(features.shape)}. Add the instance dimension, "
            "e.g. features.unsqueeze(1) for a single instance."
        )
    if features.shape[-1] != n_features:
        raise ValueError(
            f"features have {features.shape[-1]} features per instance but the model has "
            f"n_features={n_features}."
        )
    if features.shape[1] != n_inst:
        raise ValueError(
            f"features have {features.shape[1]} instances (dimension 1) but the model has "
            f"n_inst={n_inst}."
        )


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def _weights(W: Tensor) -> Tensor:
    """Accept `[d_hidden, n_features]` (one instance) or `[n_inst, d_hidden, n_features]`."""
    if not torch.is_tensor(W):
        raise TypeError(f"W must be a torch.Tensor, got {type(W).__name__}.")
    if W.ndim == 2:
        return W.unsqueeze(0)
    if W.ndim != 3:
        raise ValueError(
            f"W should have shape (n_inst, d_hidden, n_features) or (d_hidden, n_features); "
            f"got shape {tuple(W.shape)}."
        )
    return W


# --------------------------------------------------------------------------- forward passes


def toy_forward(W: Tensor, b_final: Tensor, features: Tensor) -> Tensor:
    """x' = ReLU(W^T W x + b) for every instance: `[batch, n_inst, n_features]` in and out."""
    hidden = torch.einsum("ihf,bif->bih", W, features)
    out = torch.einsum("ihf,bih->bif", W, hidden) + b_final
    return torch.relu(out)


def neuron_forward(W: Tensor, b_final: Tensor, features: Tensor) -> Tensor:
    """The neuron model: h = ReLU(W x), x' = ReLU(W^T h + b). The hidden ReLU makes the
    hidden basis privileged: each hidden dimension is now a neuron."""
    hidden = torch.relu(torch.einsum("ihf,bif->bih", W, features))
    out = torch.einsum("ihf,bih->bif", W, hidden) + b_final
    return torch.relu(out)


class ToyModel(nn.Module):
    """`n_inst` toy models trained side by side: h = W x, x' = ReLU(W^T h + b).

    feature_probability and importance are each a float, a `[n_features]` row, an
    `[n_inst, 1]` column or an `[n_inst, n_features]` table; they are stored as buffers of
    shape `[n_inst, n_features]` (so they follow `.to(device)`). `seed` makes the initial
    weights reproducible (Xavier-normal W, zero bias).
    """

    def __init__(
        self,
        n_features: int,
        d_hidden: int,
        n_inst: int = 1,
        feature_probability: TableLike = 1.0,
        importance: TableLike = 1.0,
        *,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        _positive_int(n_features, "n_features")
        _positive_int(d_hidden, "d_hidden")
        _positive_int(n_inst, "n_inst")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}.")
        device = torch.device(device) if device is not None else torch.device("cpu")
        prob = as_table(feature_probability, n_inst, n_features, "feature_probability",
                        device=device, dtype=dtype)
        check_probability(prob)
        imp = as_table(importance, n_inst, n_features, "importance", device=device, dtype=dtype)
        if not torch.isfinite(imp).all() or (imp < 0).any():
            raise ValueError("importance must be finite and non-negative.")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        std = math.sqrt(2.0 / (n_features + d_hidden))  # Xavier normal
        W = torch.randn((n_inst, d_hidden, n_features), generator=generator) * std
        self.W = nn.Parameter(W.to(device=device, dtype=dtype))
        self.b_final = nn.Parameter(torch.zeros((n_inst, n_features), device=device, dtype=dtype))
        self.register_buffer("feature_probability", prob)
        self.register_buffer("importance", imp)

    @property
    def n_inst(self) -> int:
        return self.W.shape[0]

    @property
    def d_hidden(self) -> int:
        return self.W.shape[1]

    @property
    def n_features(self) -> int:
        return self.W.shape[2]

    def forward(self, features: Tensor) -> Tensor:
        check_features(features, self.n_inst, self.n_features)
        return toy_forward(self.W, self.b_final, features)

    def hidden(self, features: Tensor) -> Tensor:
        """Hidden activations h = W x, shape `[batch, n_inst, d_hidden]`."""
        check_features(features, self.n_inst, self.n_features)
        return torch.einsum("ihf,bif->bih", self.W, features)

    def generate_batch(self, n_batch: int, generator: torch.Generator | None = None) -> Tensor:
        """A batch of sparse features drawn with this model's feature probabilities."""
        return generate_batch(n_batch, self.feature_probability, generator)

    def loss(self, out: Tensor, features: Tensor) -> Tensor:
        """Importance-weighted loss per instance, shape `[n_inst]`."""
        return loss_per_instance(out, features, self.importance)

    def instance(self, k: int) -> ToyModel:
        """A copy of instance `k` alone, as a model with n_inst=1 (same class)."""
        if not -self.n_inst <= k < self.n_inst:
            raise IndexError(f"instance {k} out of range for n_inst={self.n_inst}.")
        single = copy.deepcopy(self)
        with torch.no_grad():
            single.W = nn.Parameter(self.W[k : k + 1].detach().clone())
            single.b_final = nn.Parameter(self.b_final[k : k + 1].detach().clone())
        single.feature_probability = self.feature_probability[k : k + 1].clone()
        single.importance = self.importance[k : k + 1].clone()
        return single


class NeuronModel(ToyModel):
    """The toy model with a ReLU on the hidden layer: h = ReLU(W x), x' = ReLU(W^T h + b).

    The hidden ReLU privileges the hidden basis, so one can ask what each neuron does.
    """

    def forward(self, features: Tensor) -> Tensor:
        check_features(features, self.n_inst, self.n_features)
        return neuron_forward(self.W, self.b_final, features)

    def hidden(self, features: Tensor) -> Tensor:
        """Neuron activations ReLU(W x), shape `[batch, n_inst, d_hidden]`."""
        return torch.relu(super().hidden(features))


# --------------------------------------------------------------------------- data


def _draw(shape: tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    dev = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=dev)


def _prob(feature_probability: TableLike, name: str, upper: float = 1.0) -> Tensor:
    p = feature_probability
    if not torch.is_tensor(p):
        p = torch.as_tensor(p, dtype=torch.float32)
    if p.ndim != 2:
        raise ValueError(
            f"{name} should have shape (n_inst, n_features); got shape {tuple(p.shape)}. "
            "Use e.g. torch.full((n_inst, n_features), p)."
        )
    check_probability(p, name, upper)
    return p


def _n_batch(n_batch: int) -> int:
    if isinstance(n_batch, bool) or not isinstance(n_batch, int) or n_batch < 1:
        raise ValueError(f"n_batch must be a positive integer, got {n_batch!r}.")
    return n_batch


def _finish(batch: Tensor, p: Tensor) -> Tensor:
    dtype = p.dtype if p.is_floating_point() else torch.float32
    return batch.to(device=p.device, dtype=dtype)


def generate_batch(
    n_batch: int, feature_probability: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Sparse features `[n_batch, n_inst, n_features]`: each is uniform in [0, 1] with
    probability p (its entry of `feature_probability`, `[n_inst, n_features]`), else 0.

    Draw order (the checks rely on it): first the values, then the Bernoulli mask, each
    one `torch.rand` call of the full shape with `generator`.
    """
    _n_batch(n_batch)
    p = _prob(feature_probability, "feature_probability")
    shape = (n_batch, *p.shape)
    values = _draw(shape, generator, p.device)
    mask = _draw(shape, generator, p.device) < p.to(values.device)
    return _finish(values * mask, p)


def generate_correlated_batch(
    n_batch: int, feature_probability: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Pairs of features that are both present or both absent.

    `feature_probability` is `[n_inst, n_pairs]` (the probability of each pair); the result
    is `[n_batch, n_inst, 2 * n_pairs]` where features 2k and 2k+1 form pair k. Values are
    independent uniforms in [0, 1]. Draw order: values, then one presence draw per pair.
    """
    _n_batch(n_batch)
    p = _prob(feature_probability, "feature_probability")
    n_inst, n_pairs = p.shape
    values = _draw((n_batch, n_inst, 2 * n_pairs), generator, p.device)
    present = _draw((n_batch, n_inst, n_pairs), generator, p.device) < p.to(values.device)
    return _finish(values * present.repeat_interleave(2, dim=-1), p)


def generate_anticorrelated_batch(
    n_batch: int, feature_probability: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Pairs of features of which at most one is present, each with marginal probability p.

    `feature_probability` is `[n_inst, n_pairs]` with entries in [0, 0.5]; the result is
    `[n_batch, n_inst, 2 * n_pairs]`, features 2k and 2k+1 forming pair k. A pair is active
    with probability 2p and then exactly one of its two features (a fair coin) is present.
    Draw order: values, then pair activity, then the coin.
    """
    _n_batch(n_batch)
    p = _prob(feature_probability, "feature_probability", upper=0.5)
    n_inst, n_pairs = p.shape
    values = _draw((n_batch, n_inst, 2 * n_pairs), generator, p.device)
    active = _draw((n_batch, n_inst, n_pairs), generator, p.device) < 2 * p.to(values.device)
    first = _draw((n_batch, n_inst, n_pairs), generator, p.device) < 0.5
    mask = torch.stack([active & first, active & ~first], dim=-1).flatten(-2)
    return _finish(values * mask, p)


# --------------------------------------------------------------------------- loss


def loss_per_instance(out: Tensor, features: Tensor, importance: TableLike) -> Tensor:
    """sum_i I_i (x_i - x'_i)^2, averaged over the batch: one number per instance."""
    if out.shape != features.shape:
        raise ValueError(
            f"out has shape {tuple(out.shape)} but features have shape "
            f"{tuple(features.shape)}; they must match."
        )
    importance = torch.as_tensor(importance, dtype=out.dtype, device=out.device)
    return (importance * (features - out) ** 2).mean(dim=0).sum(dim=-1)


def importance_weighted_loss(out: Tensor, features: Tensor, importance: TableLike) -> Tensor:
    """The training loss: mean over the batch, importance-weighted sum over features,
    summed over instances (so each instance trains exactly as it would alone). A scalar."""
    return loss_per_instance(out, features, importance).sum()


# --------------------------------------------------------------------------- training


def cosine_lr(step: int, n_steps: int) -> float:
    """Cosine decay to 5% of the initial rate: settles the geometry cleanly at the end."""
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / n_steps))


def optimize(
    model: nn.Module,
    make_batch: Callable[[], Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    n_steps: int,
    lr: float = 1e-3,
    *,
    lr_schedule: Callable[[int, int], float] | None = None,
    progress: bool = False,
    desc: str = "training",
    num_threads: int | None = 1,
) -> Tensor:
    """The plain Adam loop: per step draw a batch, run the model, backpropagate, step.

    `loss_fn(out, batch)` may return a scalar or one loss per instance (they are summed for
    the gradient). Returns the recorded losses (before each step), shape `[n_steps, ...]`.
    On CPU it runs with `num_threads` torch threads (see `cpu_threads`; None keeps torch's).
    """
    _positive_int(n_steps, "n_steps")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}.")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    # One preallocated tensor for the whole history, filled in place. A list of per-step loss
    # tensors looks harmless but pins the allocator: each tiny tensor sits between the big
    # per-step batches, so freed memory cannot be reused and the process grows ~2-3 MB per step.
    history: Tensor | None = None
    with cpu_threads(num_threads if on_cpu else None):
        for step in tqdm(range(n_steps), desc=desc, disable=not progress, leave=False):
            if lr_schedule is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr * lr_schedule(step, n_steps)
            batch = make_batch()
            loss = loss_fn(model(batch), batch)
            optimizer.zero_grad()
            loss.sum().backward()
            optimizer.step()
            if history is None:
                history = torch.empty((n_steps, *loss.shape), dtype=loss.dtype,
                                      device=loss.device)
            history[step] = loss.detach()
    return history.cpu()


def train_toy_model(
    model: ToyModel,
    n_steps: int = 5000,
    batch_size: int = 1024,
    lr: float = 1e-3,
    *,
    seed: int = 0,
    batch_fn: Callable[[int, torch.Generator], Tensor] | None = None,
    lr_schedule: Callable[[int, int], float] | None = cosine_lr,
    progress: bool = True,
    num_threads: int | None = 1,
) -> Tensor:
    """Train every instance of `model` in place with Adam on its own sparse batches.

    `batch_fn(batch_size, generator)` draws a batch (default: `model.generate_batch`, i.e.
    independent sparse features with the model's probabilities). The generator lives on the
    model's device and is seeded with `seed`. Returns the loss history per instance,
    `[n_steps, n_inst]`.
    """
    _positive_int(batch_size, "batch_size")
    generator = torch.Generator(device=model.W.device).manual_seed(seed)
    draw = batch_fn if batch_fn is not None else model.generate_batch
    return optimize(
        model,
        lambda: draw(batch_size, generator),
        model.loss,
        n_steps,
        lr,
        lr_schedule=lr_schedule,
        progress=progress,
        desc=f"training {model.n_inst} instance(s)",
        num_threads=num_threads,
    )


def train_separate(
    n_models: int,
    n_features: int,
    d_hidden: int,
    feature_probability: TableLike = 1.0,
    importance: TableLike = 1.0,
    n_steps: int = 5000,
    batch_size: int = 1024,
    lr: float = 1e-3,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    num_threads: int | None = 1,
) -> list[ToyModel]:
    """The slow way, for comparison: `n_models` models with n_inst=1, trained one by one.

    feature_probability and importance are tables over the `n_models` models as in
    `ToyModel`; model k gets row k and seed `seed + k`.
    """
    _positive_int(n_models, "n_models")
    prob = as_table(feature_probability, n_models, n_features, "feature_probability")
    imp = as_table(importance, n_models, n_features, "importance")
    models = []
    for k in tqdm(range(n_models), desc="separate models", disable=not progress):
        model = ToyModel(n_features, d_hidden, 1, prob[k : k + 1], imp[k : k + 1],
                         seed=seed + k, device=device)
        train_toy_model(model, n_steps, batch_size, lr, seed=seed + k, progress=False,
                        num_threads=num_threads)
        models.append(model)
    return models


# --------------------------------------------------------------------------- analysis


def feature_norms(W: Tensor) -> Tensor:
    """||W_i|| for every feature column: `[n_inst, n_features]`."""
    return _weights(W).norm(dim=-2)


def represented_features(W: Tensor, threshold: float = 0.5) -> Tensor:
    """Which features the model represents: column norm above `threshold` (bool table)."""
    return feature_norms(W) > threshold


def _overlaps(W: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    W = _weights(W)
    norms = W.norm(dim=-2)
    W_hat = W / norms.clamp_min(eps).unsqueeze(-2)
    return norms, torch.einsum("ihf,ihg->ifg", W_hat, W) ** 2


def norms_and_interference(W: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Per feature: ||W_i|| and how much other features project onto its direction,
    sum_{j != i} (W_hat_i . W_j)^2 (the paper's superposition colouring). Zero columns give 0."""
    norms, overlaps = _overlaps(W, eps)
    off_diagonal = 1 - torch.eye(overlaps.shape[-1], dtype=overlaps.dtype, device=overlaps.device)
    return norms, (overlaps * off_diagonal).sum(-1)


def feature_dimensionality(W: Tensor, eps: float = 1e-8) -> Tensor:
    """D_i = ||W_i||^2 / sum_j (W_hat_i . W_j)^2: the fraction of a dimension feature i owns.

    1 for a feature alone in its direction, 1/2 for an antipodal pair, 2/5 for a pentagon in
    2-D, 0 for a feature that is not represented (zero column). `[n_inst, n_features]`.
    """
    norms, overlaps = _overlaps(W, eps)
    return norms**2 / overlaps.sum(-1).clamp_min(eps)


def dimensions_per_feature(W: Tensor, threshold: float = 0.5) -> Tensor:
    """d_hidden / (number of represented features) per instance: how many dimensions each
    represented feature gets on average (inf when none is represented).

    The paper writes d_hidden / ||W||_F^2, which is the same number only when every
    represented feature has norm 1 and the others norm 0; counting the features (norm above
    `threshold`, as `represented_features`) does not assume that."""
    W = _weights(W)
    count = represented_features(W, threshold).sum(-1).to(W.dtype)
    return W.shape[1] / count


def feature_probabilities_log(n: int, low: float, high: float = 1.0) -> Tensor:
    """n feature probabilities spaced evenly in log between `high` and `low` (descending)."""
    check_probability(torch.tensor([low, high]), "the probability range")
    if not 0 < low <= high:
        raise ValueError(f"need 0 < low <= high, got low={low}, high={high}.")
    return torch.logspace(math.log10(high), math.log10(low), n)


# --------------------------------------------------------------------------- neuron analysis


def neuron_feature_response(model: ToyModel, value: float = 1.0) -> Tensor:
    """What each neuron does with each feature alone: the hidden activation (`model.hidden`)
    when only feature i is present (at `value`), shape `[n_inst, n_features, d_hidden]`."""
    eye = torch.eye(model.n_features, dtype=model.W.dtype, device=model.W.device) * value
    batch = eye.unsqueeze(1).expand(model.n_features, model.n_inst, model.n_features)
    with torch.no_grad():
        hidden = model.hidden(batch)
    return hidden.permute(1, 0, 2).contiguous()


def neuron_monosemanticity(W: Tensor) -> Tensor:
    """Per neuron, the share of its squared positive input weight on its strongest feature:
    1 = monosemantic, lower = polysemantic, 0 = a dead neuron. `[n_inst, d_hidden]`."""
    pos = torch.relu(_weights(W)) ** 2
    total = pos.sum(-1)
    return torch.where(total > 0, pos.max(-1).values / total.clamp_min(1e-12), 0.0)


def neuron_features(W: Tensor, threshold: float = 0.3) -> list[list[list[int]]]:
    """For each instance and neuron, the features that drive it: positive weights of at least
    `threshold` times that neuron's largest weight (strongest first)."""
    W = _weights(W).detach().cpu()
    result = []
    for inst in W:
        per_neuron = []
        for row in inst:
            top = row.max().item()
            order = torch.argsort(row, descending=True).tolist()
            per_neuron.append([f for f in order if top > 0 and row[f] >= threshold * top])
        result.append(per_neuron)
    return result


def describe_neurons(W: Tensor, threshold: float = 0.3) -> list[str]:
    """One line per instance saying which features each neuron responds to."""
    lines = []
    for k, neurons in enumerate(neuron_features(W, threshold)):
        parts = []
        for n, feats in enumerate(neurons):
            kind = "dead" if not feats else ("mono" if len(feats) == 1 else "poly")
            parts.append(f"n{n}:{kind}{feats if feats else ''}")
        lines.append(f"instance {k}: " + "  ".join(parts))
    return lines


# --------------------------------------------------------------------------- several starts


def evaluation_loss(
    model: ToyModel,
    n_batch: int = 20000,
    *,
    seed: int = 1,
    batch_fn: Callable[[int, torch.Generator], Tensor] | None = None,
) -> Tensor:
    """Each instance's loss on one fresh batch (no gradients): `[n_inst]`. `batch_fn` as in
    `train_toy_model`; the generator lives on the model's device and is seeded with `seed`."""
    generator = torch.Generator(device=model.W.device).manual_seed(seed)
    draw = batch_fn if batch_fn is not None else model.generate_batch
    with torch.no_grad():
        batch = draw(n_batch, generator)
        return model.loss(model(batch), batch)


def best_of_starts(
    loss: Tensor, n_starts: int, *, rel_tol: float = 0.05, abs_tol: float = 1e-3
) -> tuple[Tensor, Tensor]:
    """Instances trained as groups of `n_starts` random starts of one setting (consecutive
    instances, `loss` `[n_groups * n_starts]`): the index of each group's lowest-loss
    instance and how many of its starts got stuck (loss above best * (1 + rel_tol) + abs_tol).
    Returns (best_index, n_stuck), each `[n_groups]`."""
    _positive_int(n_starts, "n_starts")
    if loss.ndim != 1 or loss.numel() % n_starts:
        raise ValueError(
            f"loss should be [n_groups * n_starts] with n_starts={n_starts}; got shape "
            f"{tuple(loss.shape)}."
        )
    grouped = loss.detach().reshape(-1, n_starts)
    best = grouped.min(-1)
    stuck = grouped > best.values.unsqueeze(-1) * (1 + rel_tol) + abs_tol
    offsets = torch.arange(grouped.shape[0], device=loss.device) * n_starts
    return offsets + best.indices, stuck.sum(-1)


# --------------------------------------------------------------------------- phase diagram

# The paper's phase diagram (section "Phase Change"): 2 features in 1 dimension, feature 0 of
# importance 1, the extra feature 1 of relative importance r, both of sparsity S.
EXTRA_FEATURE_REGIMES = ("not represented", "dedicated dimension", "superposition")


def phase_diagram_tables(
    densities: Sequence[float], relative_importances: Sequence[float], n_starts: int = 1
) -> tuple[Tensor, Tensor]:
    """Feature probability and importance tables `[n_inst, 2]` for the phase diagram: one
    instance per (relative importance, density, start), in that order (importance slowest),
    so `n_inst = len(relative_importances) * len(densities) * n_starts`."""
    _positive_int(n_starts, "n_starts")
    p = torch.as_tensor(list(densities), dtype=torch.float32)
    r = torch.as_tensor(list(relative_importances), dtype=torch.float32)
    check_probability(p, "densities")
    if (r < 0).any():
        raise ValueError("relative importances must be non-negative.")
    n_p, n_r = len(p), len(r)
    p_inst = p.repeat_interleave(n_starts).repeat(n_r)
    r_inst = r.repeat_interleave(n_p * n_starts)
    prob = p_inst.unsqueeze(1).expand(-1, 2).clone()
    importance = torch.stack([torch.ones_like(r_inst), r_inst], dim=1)
    return prob, importance


def extra_feature_regime(W: Tensor, threshold: float = 0.5) -> Tensor:
    """Which regime the extra feature (feature 1 of 2) is in, per instance (`[n_inst]`, long):
    0 not represented (||W_1|| <= threshold), 1 a dedicated dimension (represented and
    feature 0 is not), 2 superposition (both represented, so in 1 dimension they share it)."""
    W = _weights(W)
    if W.shape[-1] != 2:
        raise ValueError(f"the phase diagram uses 2 features; W has {W.shape[-1]}.")
    represented = represented_features(W, threshold)
    return torch.where(
        ~represented[:, 1], 0, torch.where(represented[:, 0], 2, 1)
    ).long()
