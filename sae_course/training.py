"""A general SAE training loop: any activation source, any architecture in `sae_course.sae`.

    result = train_sae(sae, data, TrainConfig(n_steps=2000, lr=1e-3), checkpoint_dir="ckpt")

`data` is either a function `step -> batch [n_tokens, d_in]` (deterministic per step, the
easiest to resume) or an iterable of batches (on resume it is iterated from its start again
and the batches already used are skipped, so pass one that yields the same batches).

What a step does: the learning rate follows a linear warmup and a linear decay to zero over the
last `lr_decay_steps`; the sparsity term ("l1" or "l0") is scaled by a linear warmup from 0;
Adam; the architecture's hooks around the step (decoder renormalisation for unit-norm ReLU
SAEs); dead-latent tracking; optional resampling of dead latents (Bricken et al. 2023) at fixed
intervals; W_dec snapshots for the training-scrubber widget.

Checkpoints (when `checkpoint_dir` is given): `checkpoint_XXXXXXXX.safetensors` with the SAE's
parameters and buffers, Adam's moments, the resampling RNG and the snapshots, then `state.json`
(step, configs, history) pointing at it. Both are written atomically (temporary file, then
os.replace) and state.json last, so a crash at any moment leaves the previous checkpoint
intact; training again with the same folder resumes and ends exactly where an uninterrupted
run would have.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm

from sae_course.evaluation import l0
from sae_course.files import save_safetensors_atomic, write_json_atomic
from sae_course.sae import SAE, normalize_rows, resample_dead_latents
from sae_course.settings import cpu_threads

STATE_FILE = "state.json"
SPARSITY_TERMS = ("l1", "l0")


@dataclass
class TrainConfig:
    """How to train (the SAE's own config says what to train)."""

    n_steps: int
    lr: float = 1e-3
    lr_warmup_steps: int = 0
    lr_decay_steps: int = 0  # linear decay to 0 over the last lr_decay_steps steps
    sparsity_warmup_steps: int = 0  # the l1/l0 term ramps up linearly from 0
    betas: tuple[float, float] = (0.9, 0.999)
    init_b_dec: str | None = "geometric_median"  # from the first batch: "mean", or None
    resample_every: int = 0  # resample dead latents every this many steps (0: never)
    resample_until: float = 0.5  # ...but only during this fraction of training
    log_every: int = 10
    snapshot_every: int = 0  # keep a copy of the (normalised) W_dec every this many steps
    checkpoint_every: int = 0  # with a checkpoint_dir; 0: only at the end
    seed: int = 0
    progress: bool = True
    threads: int | None = None  # CPU threads during training (None: torch's setting); toy-sized
    # SAEs run fastest on 1 thread, especially on a shared machine. Restored afterwards.

    def __post_init__(self) -> None:
        if self.n_steps <= 0:
            raise ValueError(f"n_steps must be positive, got {self.n_steps}.")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}.")
        for name in ("lr_warmup_steps", "lr_decay_steps", "sparsity_warmup_steps",
                     "resample_every", "log_every", "snapshot_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.init_b_dec not in (None, "mean", "geometric_median"):
            raise ValueError("init_b_dec must be None, 'mean' or 'geometric_median'.")
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    def lr_at(self, step: int) -> float:
        factor = 1.0
        if self.lr_warmup_steps and step < self.lr_warmup_steps:
            factor = (step + 1) / self.lr_warmup_steps
        decay_start = self.n_steps - self.lr_decay_steps
        if self.lr_decay_steps and step >= decay_start:
            factor *= (self.n_steps - step) / self.lr_decay_steps
        return self.lr * factor

    def sparsity_factor_at(self, step: int) -> float:
        if self.sparsity_warmup_steps and step < self.sparsity_warmup_steps:
            return (step + 1) / self.sparsity_warmup_steps
        return 1.0


@dataclass
class TrainResult:
    """What `train_sae` returns: the log, the W_dec snapshots, and the resampling events."""

    history: list[dict[str, float]] = field(default_factory=list)
    snapshots: list[Tensor] = field(default_factory=list)
    snapshot_steps: list[int] = field(default_factory=list)
    resampled: list[tuple[int, int]] = field(default_factory=list)  # (step, how many)

    def series(self, key: str) -> list[float]:
        return [h[key] for h in self.history if key in h]


def make_optimizer(sae: SAE, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over the SAE's parameters; fused where torch supports it (CPU and CUDA)."""
    fused = sae.device.type in ("cpu", "cuda")
    return torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=cfg.betas, fused=fused)


def _batches(data: Callable[[int], Tensor] | Iterable[Tensor], start: int):
    if callable(data):
        step = start
        while True:
            yield data(step)
            step += 1
    else:
        yield from itertools.islice(iter(data), start, None)


def train_step(
    sae: SAE, optimizer: torch.optim.Optimizer, x: Tensor, sparsity_factor: float = 1.0
) -> tuple[Any, dict[str, float]]:
    """One optimisation step on batch x; returns the SAE output and the loss terms' values.

    The values are keyed "loss" (the total) and "loss_<term>" for each named term, so that a
    term called "l0" (JumpReLU's penalty) never collides with the measured L0 in the log.
    """
    sae.train()
    out = sae(x)
    loss = sum(
        (term * sparsity_factor if name in SPARSITY_TERMS else term)
        for name, term in out.losses.items()
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    sae.before_optimizer_step()
    optimizer.step()
    sae.after_optimizer_step()
    sae.record_firing(out.fired(), x.reshape(-1, sae.cfg.d_in).shape[0])
    values = {f"loss_{name}": float(t.detach()) for name, t in out.losses.items()}
    values["loss"] = float(loss.detach())
    return out, values


def train_sae(
    sae: SAE,
    data: Callable[[int], Tensor] | Iterable[Tensor],
    cfg: TrainConfig,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train `sae` in place; see the module docstring. Returns a TrainResult.

    `callback(values)` is called with every log entry as it is made (e.g. a
    `widgets.TrainingMonitor`); a resumed run first replays the entries it restored.
    """
    with cpu_threads(cfg.threads or None):
        return _train(sae, data, cfg, checkpoint_dir, resume, callback)


def _train(sae: SAE, data: Callable[[int], Tensor] | Iterable[Tensor], cfg: TrainConfig,
           checkpoint_dir: str | Path | None, resume: bool,
           callback: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    optimizer = make_optimizer(sae, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    result = TrainResult()
    start = 0
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None and resume and (folder / STATE_FILE).exists():
        start = load_checkpoint(folder, sae, optimizer, generator, result, cfg)
    if callback is not None:
        for values in result.history:  # a resumed run: the steps done before the interruption
            callback(values)
    batches = _batches(data, start)
    bar = tqdm(range(start, cfg.n_steps), desc=f"training {sae.cfg.architecture} SAE",
               disable=not cfg.progress, initial=start, total=cfg.n_steps)
    n_resample_steps = math.floor(cfg.n_steps * cfg.resample_until)
    for step in bar:
        x = next(batches)  # checked by sae.init_b_dec and sae.forward (check_input)
        if step == 0:
            if cfg.init_b_dec is not None:
                sae.init_b_dec(x, cfg.init_b_dec)
            if cfg.snapshot_every:
                _snapshot(sae, result, 0)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr_at(step)
        out, values = train_step(sae, optimizer, x, cfg.sparsity_factor_at(step))
        done = step + 1
        if cfg.resample_every and done % cfg.resample_every == 0 and done <= n_resample_steps:
            n = resample_dead_latents(sae, x, optimizer=optimizer, generator=generator)
            result.resampled.append((done, n))
        if cfg.log_every and (done % cfg.log_every == 0 or done == cfg.n_steps):
            with torch.no_grad():
                x2 = x.reshape(-1, sae.cfg.d_in)
                var = (x2 - x2.mean(0)).pow(2).sum(-1).mean()
                values["l0"] = float(l0(out.latents))
                mse = values["loss_mse"]
                values["explained_variance"] = float(1 - mse / max(float(var), 1e-12))
                values["dead_fraction"] = float(sae.dead_mask().float().mean())
            values["step"] = done
            values["lr"] = cfg.lr_at(step)
            result.history.append(values)
            if callback is not None:
                callback(values)
            bar.set_postfix(loss=f"{values['loss']:.4g}", l0=f"{values['l0']:.1f}")
        if cfg.snapshot_every and done % cfg.snapshot_every == 0:
            _snapshot(sae, result, done)
        if folder is not None and (
            done == cfg.n_steps or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
        ):
            save_checkpoint(folder, sae, optimizer, generator, result, cfg, done)
    bar.close()
    sae.eval()
    return result


def _snapshot(sae: SAE, result: TrainResult, step: int) -> None:
    if result.snapshot_steps and result.snapshot_steps[-1] == step:
        return
    with torch.no_grad():
        result.snapshots.append(normalize_rows(sae.W_dec.detach()).cpu().clone())
    result.snapshot_steps.append(step)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def save_checkpoint(folder: Path, sae: SAE, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, result: TrainResult, cfg: TrainConfig,
                    step: int) -> Path:
    """Write the tensors file, then state.json pointing at it; remove older tensor files."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {f"sae.{k}": v for k, v in sae.state_dict().items()}
    params = list(sae.parameters())
    for i, p in enumerate(params):
        for key, value in optimizer.state.get(p, {}).items():
            tensors[f"opt.{i}.{key}"] = torch.as_tensor(value)
    tensors["rng"] = generator.get_state()
    for j, snap in enumerate(result.snapshots):
        tensors[f"snapshot.{j}"] = snap
    name = f"checkpoint_{step:08d}.safetensors"
    save_safetensors_atomic(tensors, folder / name)
    state = {
        "step": step,
        "tensors": name,
        "sae_config": sae.cfg.to_dict(),
        "train_config": dataclasses.asdict(cfg),
        "history": result.history,
        "snapshot_steps": result.snapshot_steps,
        "resampled": result.resampled,
    }
    write_json_atomic(folder / STATE_FILE, state)
    for old in folder.glob("checkpoint_*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return folder / name


def load_checkpoint(folder: Path, sae: SAE, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, result: TrainResult,
                    cfg: TrainConfig | None = None) -> int:
    """Restore a checkpoint written by `save_checkpoint` into sae/optimizer/generator/result.

    Returns the step to continue from.
    """
    state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    if state["sae_config"] != sae.cfg.to_dict():
        raise ValueError(
            f"The checkpoint in {folder} is for a different SAE ({state['sae_config']}); "
            "use another checkpoint_dir or pass resume=False to start over."
        )
    if cfg is not None:
        saved = state["train_config"]
        now = json.loads(json.dumps(dataclasses.asdict(cfg)))
        different = sorted(k for k in now
                           if k not in ("progress", "threads") and saved.get(k) != now[k])
        if different:
            raise ValueError(
                f"The checkpoint in {folder} was made with different training settings "
                f"({', '.join(different)}); resuming would not match an uninterrupted run. "
                "Use the same TrainConfig, another checkpoint_dir, or resume=False."
            )
    tensors = load_file(str(folder / state["tensors"]))
    device = sae.device
    sae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("sae.")})
    params = list(sae.parameters())
    sd = optimizer.state_dict()
    opt_state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = value.to(device)
    for i in opt_state:
        if i >= len(params):
            raise ValueError(f"The checkpoint in {folder} has optimizer state for a parameter "
                             f"the SAE does not have (index {i}).")
    sd["state"] = opt_state
    optimizer.load_state_dict(sd)
    generator.set_state(tensors["rng"])
    result.history = state["history"]
    result.snapshot_steps = state["snapshot_steps"]
    result.snapshots = [tensors[f"snapshot.{j}"] for j in range(len(result.snapshot_steps))]
    result.resampled = [tuple(r) for r in state["resampled"]]
    return int(state["step"])
