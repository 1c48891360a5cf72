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
parameters and buffers, Adam's moments and the resampling RNG, then `state.json` (step,
configs, history) pointing at it. Each W_dec snapshot is written once, to its own
`snapshot_XXXXXXXX.safetensors`, so a checkpoint's size does not grow with the run. All are
written atomically (temporary file, then os.replace) and state.json last, so a crash at any
moment leaves the previous checkpoint intact; training again with the same folder resumes and
ends exactly where an uninterrupted run would have (removing what the crash left half-written).

Bad input stops training before work is lost: settings are checked when the TrainConfig is
made, the checkpoint folder before the first step, each batch as it arrives; a non-finite loss
stops training at that step, before the optimizer applies it, and a non-finite state is never
checkpointed. A data source that runs out early stops with a checkpoint of the steps done.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm

from sae_course.evaluation import l0
from sae_course.files import save_safetensors_atomic, temporary_files, write_json_atomic
from sae_course.sae import SAE, normalize_rows, resample_dead_latents
from sae_course.settings import MAX_SEED, cpu_threads

STATE_FILE = "state.json"
SPARSITY_TERMS = ("l1", "l0")
CHECKPOINT_NAME = re.compile(r"checkpoint_\d{8}\.safetensors")


class TrainingDiverged(RuntimeError):
    """The loss or the SAE's state became NaN or Inf; the message names the step."""


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
        if not _is_int(self.n_steps) or self.n_steps <= 0:
            raise ValueError(f"n_steps must be a positive integer, got {self.n_steps!r}. "
                             "Fix: pass how many optimizer steps to train, e.g. n_steps=2000.")
        if not isinstance(self.lr, (int, float)) or not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}: an infinite or "
                             "NaN learning rate turns every weight into NaN. Fix: e.g. lr=1e-3.")
        for name in ("lr_warmup_steps", "lr_decay_steps", "sparsity_warmup_steps",
                     "resample_every", "log_every", "snapshot_every", "checkpoint_every"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}. "
                                 "Fix: a number of steps (0 turns it off).")
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}. "
                             "Fix: keep the default (0.9, 0.999).")
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in 0..2**63-1, got {self.seed!r}. "
                             "Fix: use a smaller seed, e.g. 0.")
        if not (isinstance(self.resample_until, (int, float)) and 0 <= self.resample_until <= 1):
            raise ValueError(f"resample_until is a fraction of training, in [0, 1]; got "
                             f"{self.resample_until!r}. Fix: e.g. 0.5 (the first half).")
        if self.init_b_dec not in (None, "mean", "geometric_median"):
            raise ValueError(f"init_b_dec must be None, 'mean' or 'geometric_median', got "
                             f"{self.init_b_dec!r}. Fix: use one of those three.")
        self.betas = betas  # type: ignore[assignment]

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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
    sae: SAE, optimizer: torch.optim.Optimizer, x: Tensor, sparsity_factor: float = 1.0,
    step: int | None = None,
) -> tuple[Any, dict[str, float]]:
    """One optimisation step on batch x; returns the SAE output and the loss terms' values.

    The values are keyed "loss" (the total) and "loss_<term>" for each named term, so that a
    term called "l0" (JumpReLU's penalty) never collides with the measured L0 in the log.
    A non-finite loss raises TrainingDiverged (naming `step`) before anything is updated.
    """
    sae.train()
    out = sae(x)
    loss = sum(
        (term * sparsity_factor if name in SPARSITY_TERMS else term)
        for name, term in out.losses.items()
    )
    if not math.isfinite(float(loss.detach())):
        terms = ", ".join(f"{n}={float(t.detach()):.4g}" for n, t in out.losses.items())
        raise TrainingDiverged(
            f"The loss is {float(loss.detach())} at step {step} ({terms}); the SAE was not "
            "updated with it. Fix: lower the learning rate or the loss coefficients, and check "
            "the data's scale; resume from the last checkpoint."
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
    written = -1  # the last step whose snapshots this run's checkpoints hold
    if folder is not None:
        check_checkpoint_folder(folder, sae, cfg)
        if resume and (folder / STATE_FILE).exists():
            start = load_checkpoint(folder, sae, optimizer, generator, result, cfg)
            written = start
        remove_leftovers(folder)
    if callback is not None:
        for values in result.history:  # a resumed run: the steps done before the interruption
            callback(values)
    batches = _batches(data, start)
    bar = tqdm(range(start, cfg.n_steps), desc=f"training {sae.cfg.architecture} SAE",
               disable=not cfg.progress, initial=start, total=cfg.n_steps)
    n_resample_steps = math.floor(cfg.n_steps * cfg.resample_until)
    for step in bar:
        x = next(batches, None)
        if x is None:
            if folder is not None and step > max(written, 0):
                save_checkpoint(folder, sae, optimizer, generator, result, cfg, step, written)
            kept = f" A checkpoint of step {step} is in {folder}." if folder is not None else ""
            raise ValueError(
                f"The data ran out after {step} batches, but n_steps={cfg.n_steps}.{kept} Fix: "
                "pass a source with at least n_steps batches (e.g. a function step -> batch, or "
                "more contexts for the activation store), or lower n_steps."
            )
        check_batch(x, step)
        try:  # sae.init_b_dec and sae.forward check the values (sae.check_input)
            if step == 0:
                if cfg.init_b_dec is not None:
                    sae.init_b_dec(x, cfg.init_b_dec)
                if cfg.snapshot_every:
                    _snapshot(sae, result, 0)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr_at(step)
            out, values = train_step(sae, optimizer, x, cfg.sparsity_factor_at(step), step=step)
        except ValueError as err:
            raise ValueError(f"The batch for step {step}: {err}") from None
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
            save_checkpoint(folder, sae, optimizer, generator, result, cfg, done, written)
            written = done
    bar.close()
    sae.eval()
    return result


def check_batch(x: Any, step: int) -> None:
    """Raise ValueError naming the step when a batch is not float activations [n, d]; the
    SAE checks their width, dtype, device and values itself (`SAE.check_input`)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"The batch for step {step} is a {type(x).__name__}, not a tensor. "
                         "Fix: the data source must give torch tensors [n_tokens, d_in].")
    if not x.is_floating_point():
        raise ValueError(
            f"The batch for step {step} has dtype {x.dtype}: token ids, not activations? Fix: "
            "pass activations (e.g. from an ActivationStore), as floats of the SAE's dtype."
        )
    if x.dim() < 2 or x.numel() == 0:
        raise ValueError(f"The batch for step {step} has shape {tuple(x.shape)}: it needs at "
                         "least one token of d_in values ([n_tokens, d_in], n_tokens >= 1). Fix: "
                         "check the data source's batch_size.")


def check_checkpoint_folder(folder: Path, sae: SAE, cfg: TrainConfig) -> None:
    """Before the first step: the folder can be created and written, and has room."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"checkpoint_dir {folder} is a file. Fix: pass a folder path.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe.", suffix=".tmp"):
            pass
    except OSError as err:
        raise ValueError(f"checkpoint_dir {folder} cannot be written ({err.strerror}). Fix: "
                         "pass a folder you can write to, or no checkpoint_dir.") from err
    n_bytes = 3 * sum(t.numel() * t.element_size() for t in sae.state_dict().values())
    if cfg.snapshot_every:
        n_snapshots = cfg.n_steps // cfg.snapshot_every + 1
        n_bytes += n_snapshots * sae.cfg.d_sae * sae.cfg.d_in * 4
    free = shutil.disk_usage(folder).free
    if free < n_bytes:
        raise ValueError(f"checkpoint_dir {folder} has {free / 2**20:.0f} MB free, but the "
                         f"checkpoints (and snapshots) need about {n_bytes / 2**20:.0f} MB. "
                         "Fix: free some space or use a folder on another disk.")


def remove_leftovers(folder: Path) -> None:
    """Remove what interrupted writes left: temporary files, and tensor files state.json
    does not point at (older checkpoints, snapshots after the saved step)."""
    for tmp in temporary_files(folder):
        tmp.unlink(missing_ok=True)
    state_path = folder / STATE_FILE
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.exists() else {}
    keep = {state.get("tensors")} | {_snapshot_name(s) for s in state.get("snapshot_steps", [])}
    for pattern in ("checkpoint_*.safetensors", "snapshot_*.safetensors"):
        for old in folder.glob(pattern):
            if old.name not in keep:
                old.unlink(missing_ok=True)


def _snapshot_name(step: int) -> str:
    return f"snapshot_{int(step):08d}.safetensors"


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
                    step: int, written_up_to: int = -1) -> Path:
    """Write the tensors file and the snapshots after step `written_up_to` (those up to it
    are on disk already), then state.json pointing at them; remove the files it does not
    point at. A non-finite state raises TrainingDiverged and writes nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {f"sae.{k}": v for k, v in sae.state_dict().items()}
    params = list(sae.parameters())
    for i, p in enumerate(params):
        for key, value in optimizer.state.get(p, {}).items():
            tensors[f"opt.{i}.{key}"] = torch.as_tensor(value)
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise TrainingDiverged(
                f"Not checkpointing step {step}: {key} holds NaN or Inf values, so training "
                "diverged; the previous checkpoint is kept. Fix: lower the learning rate and "
                "resume from the previous checkpoint."
            )
    tensors["rng"] = generator.get_state()
    for snap_step, snap in zip(result.snapshot_steps, result.snapshots, strict=True):
        if snap_step > written_up_to:
            save_safetensors_atomic({"W_dec": snap}, folder / _snapshot_name(snap_step))
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
    remove_leftovers(folder)
    return folder / name


def load_checkpoint(folder: Path, sae: SAE, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, result: TrainResult,
                    cfg: TrainConfig | None = None) -> int:
    """Restore a checkpoint written by `save_checkpoint` into sae/optimizer/generator/result.

    Returns the step to continue from.
    """
    state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    if not CHECKPOINT_NAME.fullmatch(str(state.get("tensors"))):
        raise ValueError(
            f"{folder / STATE_FILE} points at {state.get('tensors')!r}, not a checkpoint file "
            "in its own folder (checkpoint_XXXXXXXX.safetensors). Fix: restore state.json, or "
            "pass resume=False to start over."
        )
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
    result.snapshots = [load_file(str(folder / _snapshot_name(s)))["W_dec"]
                        for s in result.snapshot_steps]
    result.resampled = [tuple(r) for r in state["resampled"]]
    return int(state["step"])
