"""Runtime settings shared by every notebook: device, compute budget, seed and model.

Each setting comes from, in order: an argument to `get_settings`, an environment variable
(`SAE_COURSE_DEVICE`, `SAE_COURSE_BUDGET`, `SAE_COURSE_SEED`, `SAE_COURSE_MODEL`), or a default.

The budget scales steps and sizes: `ci` is the smallest (tests use it), `laptop` suits a
CPU or a small GPU, `gpu` a proper accelerator.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

BUDGETS = ("ci", "laptop", "gpu")
MAX_SEED = 2**63 - 1  # torch.manual_seed's largest seed
MODELS = ("auto", "gpt2", "offline")
T = TypeVar("T")


def pick_device(requested: str | None = None) -> torch.device:
    """The device to run on: the requested one, else cuda, then mps, then cpu."""
    if requested and requested != "auto":
        try:
            device = torch.device(requested)
        except RuntimeError as err:
            raise ValueError(
                f"Unknown device {requested!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
            ) from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"Device {requested!r} was asked for but CUDA is not available here; "
                "use 'auto' or 'cpu'."
            )
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(
                f"Device {requested!r} was asked for but MPS is not available; use 'auto' or 'cpu'."
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass(frozen=True)
class Settings:
    """The settings a notebook runs with. Build one with `get_settings`."""

    device: torch.device
    budget: str
    seed: int
    model: str

    def scale(self, *, ci: T, laptop: T, gpu: T) -> T:
        """Pick the value for this budget: `settings.scale(ci=200, laptop=2000, gpu=20000)`."""
        return {"ci": ci, "laptop": laptop, "gpu": gpu}[self.budget]

    def __str__(self) -> str:
        return (
            f"device={self.device} budget={self.budget} seed={self.seed} model={self.model}"
        )


def _choice(name: str, value: str, allowed: tuple[str, ...], env: str) -> str:
    value = value.strip().lower()
    if value not in allowed:
        raise ValueError(
            f"Unknown {name} {value!r}: choose one of {', '.join(allowed)} "
            f"(as an argument or with the environment variable {env})."
        )
    return value


def get_settings(
    device: str | None = None,
    budget: str | None = None,
    seed: int | None = None,
    model: str | None = None,
) -> Settings:
    """Resolve the settings from arguments, then environment variables, then defaults.

    Defaults: device chosen automatically; budget `gpu` on CUDA and `laptop` elsewhere;
    seed 0; model `auto` (GPT-2 when it can be loaded, else the offline model).
    """
    dev = pick_device(device or os.environ.get("SAE_COURSE_DEVICE"))
    default_budget = "gpu" if dev.type == "cuda" else "laptop"
    bud = _choice(
        "budget", budget or os.environ.get("SAE_COURSE_BUDGET") or default_budget,
        BUDGETS, "SAE_COURSE_BUDGET",
    )
    raw_seed = seed if seed is not None else os.environ.get("SAE_COURSE_SEED", "0")
    try:
        sd = int(raw_seed)
    except ValueError as err:
        raise ValueError(
            f"The seed must be an integer, got {raw_seed!r} (check SAE_COURSE_SEED)."
        ) from err
    if not 0 <= sd <= MAX_SEED:
        raise ValueError(
            f"The seed must be in 0..2**63-1, got {sd} (check SAE_COURSE_SEED): larger seeds "
            "overflow torch's generator. Fix: use a smaller seed, e.g. 0."
        )
    mdl = _choice("model", model or os.environ.get("SAE_COURSE_MODEL") or "auto",
                  MODELS, "SAE_COURSE_MODEL")
    return Settings(device=dev, budget=bud, seed=sd, model=mdl)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def stream_generator(stream: str, seed: int | None = None) -> torch.Generator:
    """A CPU generator for one purpose (`stream`, e.g. "sae.init"), seeded from a hash of
    (stream, seed): two purposes get independent numbers even when given the same seed, and
    neither repeats `torch.manual_seed(seed)` or `torch.Generator().manual_seed(seed)`.

    `seed=None` draws the seed from the global torch RNG, so `torch.manual_seed` still makes
    the result reproducible. The same (stream, seed) always gives the same numbers.
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    digest = hashlib.sha256(f"sae_course:{stream}:{seed}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with `torch.set_num_threads(n)` (restored afterwards); None: unchanged.

    Toy models and small SAEs are tiny: intra-op threads gain nothing on them, and on a
    shared machine the threads' spin-waiting can make training ten times slower. So their
    training loops use 1 CPU thread by default.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
