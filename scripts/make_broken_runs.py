"""Train a few deliberately broken SAEs on the offline model and ship their logs.

Every run is the same TopK SAE at the middle layer's residual stream (`blocks.2.hook_resid_pre`
of the offline model) with one thing changed, or nothing: the healthy run to compare with.
Each log (`sae_course/assets/broken_runs/<run>.json`) holds the training history of `train_sae`
and the metrics measured in the model at that hook by `evaluate_lm`, but no configuration; the
answer is stored only as a digest (`sae_course.broken_runs`). Notebook 04 asks the learner to
name what went wrong in each. Deterministic (seeded data and init, one thread), a few minutes.

    nice -n 10 .venv/bin/python scripts/make_broken_runs.py
    .venv/bin/python scripts/make_broken_runs.py --steps 60 --out /tmp/broken   # a quick try
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae_course import activations as acts_lib  # noqa: E402
from sae_course import text as text_lib  # noqa: E402
from sae_course.broken_runs import BROKEN_RUNS_DIR, DIAGNOSES, write_broken_run  # noqa: E402
from sae_course.evaluation import evaluate_lm  # noqa: E402
from sae_course.models import load_model  # noqa: E402
from sae_course.sae import SAE, SAEConfig  # noqa: E402
from sae_course.training import TrainConfig, train_sae  # noqa: E402

HOOK_LAYER = 2  # where every SAE is used (and, but for the wrong-data run, trained)
WRONG_LAYER = 0  # the wrong-data run trains on this layer's activations
TRAIN_SEED, EVAL_SEED = 30_000, 40_000  # StoryWorld streams: training and evaluation text


@dataclass(frozen=True)
class Run:
    """One run: its public name, its (secret) diagnosis and what differs from the healthy run."""

    name: str
    diagnosis: str
    changes: dict[str, Any] = field(default_factory=dict)


# The names are letters in an order unrelated to the diagnoses.
RUNS = [
    Run("run_A", "lr_too_high", {"lr": 0.05, "lr_warmup_steps": 0, "lr_decay_steps": 0}),
    Run("run_B", "wrong_data", {"train_layer": WRONG_LAYER}),
    Run("run_C", "healthy"),
    Run("run_D", "not_normalised", {"normalise": False}),
    Run("run_E", "expansion_too_small", {"expansion": 1}),
    Run("run_F", "sparsity_too_weak", {"k": 128}),
]
HEALTHY = {"expansion": 8, "k": 16, "lr": 1e-3, "lr_warmup_steps": 50, "lr_decay_steps": 100,
           "normalise": True, "train_layer": HOOK_LAYER}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=BROKEN_RUNS_DIR)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--train-contexts", type=int, default=1200)
    p.add_argument("--eval-contexts", type=int, default=64)
    p.add_argument("--log-every", type=int, default=10)
    return p.parse_args(argv)


def _round(values: dict[str, float]) -> dict[str, float]:
    return {k: float(f"{v:.5g}") if isinstance(v, float) else v for k, v in values.items()}


def train_run(run: Run, acts: dict[int, torch.Tensor], model: Any, eval_tokens: torch.Tensor,
              args: argparse.Namespace) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Train one run; returns its log and its metrics in the model at the hook."""
    c = {**HEALTHY, **run.changes}
    x = acts[c["train_layer"]]
    scale = float(acts_lib.norm_scale_factor(x)) if c["normalise"] else 1.0
    d_in = x.shape[1]
    cfg = SAEConfig(d_in=d_in, d_sae=c["expansion"] * d_in, architecture="topk", k=c["k"],
                    dead_after_tokens=50 * args.batch_size)
    sae = SAE(cfg, seed=0)
    order = torch.Generator().manual_seed(0)
    per_epoch = len(x) // args.batch_size
    perm: list[torch.Tensor] = []

    def batch(step: int) -> torch.Tensor:
        if step % per_epoch == 0 or not perm:
            perm[:] = [torch.randperm(len(x), generator=order)]
        rows = perm[0][(step % per_epoch) * args.batch_size:][: args.batch_size]
        return acts_lib.normalize(x[rows], scale)

    train_cfg = TrainConfig(n_steps=args.steps, lr=c["lr"], lr_warmup_steps=c["lr_warmup_steps"],
                            lr_decay_steps=c["lr_decay_steps"], log_every=args.log_every,
                            progress=False, threads=1)
    result = train_sae(sae, batch, train_cfg)
    acts_lib.fold_scale_into_sae(sae, scale)
    m = evaluate_lm(sae, model, eval_tokens, f"blocks.{HOOK_LAYER}.hook_resid_pre",
                    batch_size=16, progress=False)
    in_model = _round({"ce_gap": m.ce_gap, "ce_recovered": m.ce_recovered, "kl": m.kl,
                       "explained_variance": m.explained_variance, "l0": m.l0,
                       "shrinkage": m.shrinkage, "dead_fraction": m.dead / m.d_sae,
                       "dense_fraction": m.dense / m.d_sae})
    in_model["dead_window_tokens"] = m.n_tokens
    return [_round(h) for h in result.history], in_model


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    assert {r.diagnosis for r in RUNS} == set(DIAGNOSES), "every diagnosis needs one run"
    torch.manual_seed(0)
    torch.set_num_threads(1)
    t0 = time.time()
    model = load_model("offline", device="cpu")
    contexts = text_lib.contexts_for_model(model, args.train_contexts, seed=TRAIN_SEED,
                                           source="storyworld")
    eval_tokens = text_lib.contexts_for_model(model, args.eval_contexts, seed=EVAL_SEED,
                                              source="storyworld")
    acts = {}
    for layer in (HOOK_LAYER, WRONG_LAYER):
        hook = f"blocks.{layer}.hook_resid_pre"
        chunks = [acts_lib.flatten_activations(acts_lib.harvest(model, contexts[i:i + 32], hook))
                  for i in tqdm(range(0, len(contexts), 32), desc=f"harvest {hook}")]
        acts[layer] = torch.cat(chunks)
    tmp = args.out.parent / f".{args.out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for run in tqdm(RUNS, desc="broken runs"):
        history, in_model = train_run(run, acts, model, eval_tokens, args)
        write_broken_run(tmp, run.name, history, in_model, run.diagnosis)
        last = history[-1]
        print(f"{run.name} ({run.diagnosis}): train loss {last['loss']:.4g} L0 {last['l0']:.1f} "
              f"EV {last['explained_variance']:.3f} dead {last['dead_fraction']:.2%} | in the "
              f"model: CE gap {in_model['ce_gap']:.4f} EV {in_model['explained_variance']:.3f}",
              flush=True)
    if args.out.exists():
        shutil.rmtree(args.out)
    tmp.rename(args.out)
    print(f"wrote {len(RUNS)} logs to {args.out} in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
