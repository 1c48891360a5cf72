"""Logs of deliberately broken SAE training runs, for Part 04's diagnosis exercise.

`scripts/make_broken_runs.py` trains a few SAEs on the offline model at a small budget, each
with one thing wrong (or nothing), and ships their logs in `assets/broken_runs/`: the training
log of `train_sae` and the SAE's metrics measured in the model by `evaluate_lm`. A log holds no
configuration and its answer only as a digest, so the curves have to be read to name what went
wrong (a digest of one of six words is no secret to a determined reader, only not a spoiler).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sae_course.files import write_json_atomic

BROKEN_RUNS_DIR = Path(__file__).parent / "assets" / "broken_runs"

DIAGNOSES = {
    "healthy": "nothing is wrong (the run to compare the others with)",
    "sparsity_too_weak": "the sparsity constraint is far too weak (k much too large)",
    "lr_too_high": "the learning rate is far too high, with no warm-up",
    "expansion_too_small": "too few latents: expansion factor 1 (d_sae = d_in)",
    "wrong_data": "trained on the wrong data for the hook it is used at (another layer's "
                  "activations)",
    "not_normalised": "the activations were not normalised (the same settings on raw "
                      "activations)",
}
"""The choices of the diagnosis exercise: key -> what went wrong."""


def answer_digest(name: str, diagnosis: str) -> str:
    """The digest a log stores instead of its answer."""
    return hashlib.sha256(f"sae_course broken run {name}: {diagnosis}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BrokenRun:
    """One shipped log: the training history and the metrics measured in the model."""

    name: str
    history: list[dict[str, float]]
    in_model: dict[str, Any]
    digest: str

    def is_diagnosis(self, diagnosis: str) -> bool:
        return answer_digest(self.name, diagnosis) == self.digest

    def note(self) -> str:
        """The metrics measured in the model, a few short lines (for a plot)."""
        m = self.in_model
        return (f"CE gap     {m['ce_gap']:.3f} nats\n"
                f"expl. var. {m['explained_variance']:.2f}\n"
                f"L0         {m['l0']:.0f}\n"
                f"dead       {m['dead_fraction']:.0%}\n"
                f"dense      {m['dense_fraction']:.0%}")


def write_broken_run(folder: Path, name: str, history: list[dict[str, float]],
                     in_model: dict[str, Any], diagnosis: str) -> Path:
    """Write one log as `folder/<name>.json` (atomically)."""
    if diagnosis not in DIAGNOSES:
        raise ValueError(f"Unknown diagnosis {diagnosis!r}: choose one of {sorted(DIAGNOSES)}.")
    path = Path(folder) / f"{name}.json"
    write_json_atomic(path, {"name": name, "history": history, "in_model": in_model,
                             "answer_digest": answer_digest(name, diagnosis)})
    return path


def load_broken_runs(folder: Path = BROKEN_RUNS_DIR) -> dict[str, BrokenRun]:
    """Every shipped log, by run name (sorted)."""
    paths = sorted(Path(folder).glob("*.json"))
    if not paths:
        raise FileNotFoundError(
            f"No broken-run logs in {folder}. Fix: reinstall the course, or make them with "
            "`python scripts/make_broken_runs.py`."
        )
    runs = {}
    for path in paths:
        raw = json.loads(path.read_text(encoding="utf-8"))
        runs[raw["name"]] = BrokenRun(raw["name"], raw["history"], raw["in_model"],
                                      raw["answer_digest"])
    return runs
