"""End-to-end SAE training on a language model: tokens/s of harvest plus SAE steps.

The learner's path, timed: an `ActivationStore` (normalised, with a disk cache, as in notebook
04) feeding `train_sae` a TopK SAE, for two models: the offline StoryWorld model and a
random-weight model of GPT-2 small's exact shape (`random_gpt2_small`, no download; speed does
not depend on the weights). Each model trains twice from a fresh SAE on the same data:
- cold: the store harvests the activations (forward passes stopped after the hook) and writes
  them to its disk cache as it goes;
- warm: a second store with the same settings reads them back from the cache (0 forward
  passes), as every pass after the first does in notebook 04.

The split: "harvest" is the time spent getting batches out of the store (building it, which
estimates the normalisation; forward passes or cache reads; cache writes; the shuffle buffer),
measured around every `next()` that `train_sae` makes on it; "SAE" is the rest of `train_sae`
(Adam steps, logging). tokens/s = training tokens (steps x batch) / (harvest + SAE seconds);
model loading and the warm-ups (one stopped harvest of a model batch, reported as "forward
alone" and measured as `benchmarks/harvest.py` does; two SAE steps on random data) are not.

    .venv/bin/python benchmarks/train_lm.py [--steps 40] [--gpt2-steps 8] [--batch-size 1024]
        [--threads N] [--device cpu] [--cache-dir DIR] [--skip-gpt2]

Last line: offline_tokens_per_s=... offline_harvest_share=... offline_warm_cache_tokens_per_s=...
offline_warm_cache_harvest_share=... gpt2_random_tokens_per_s=... gpt2_random_harvest_share=...
gpt2_random_warm_cache_tokens_per_s=... gpt2_random_warm_cache_harvest_share=...
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harvest import tokens_per_second  # noqa: E402
from sae_course.activations import ActivationStore  # noqa: E402
from sae_course.models import load_offline, random_gpt2_small  # noqa: E402
from sae_course.sae import SAE, SAEConfig  # noqa: E402
from sae_course.text import contexts_for_model  # noqa: E402
from sae_course.training import TrainConfig, train_sae  # noqa: E402


class TimedStore:
    """The store's batches, with the seconds spent waiting for each added up."""

    def __init__(self, store: ActivationStore) -> None:
        self.store = store
        self.seconds = 0.0

    def __iter__(self) -> Iterator[Tensor]:
        batches = iter(self.store)
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            self.seconds += time.perf_counter() - start
            if batch is None:
                return
            yield batch


@dataclass
class Run:
    label: str
    hook: str
    shape: str
    tokens: int
    harvest_s: float
    sae_s: float
    forward_passes: int

    @property
    def total_s(self) -> float:
        return self.harvest_s + self.sae_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.total_s

    @property
    def harvest_share(self) -> float:
        return self.harvest_s / self.total_s


def train_once(model, contexts: Tensor, hook: str, sae_cfg: SAEConfig, steps: int,
               args: argparse.Namespace, cache_dir: Path, label: str) -> Run:
    """Build a store and train a fresh SAE from it for `steps` steps; time both."""
    start = time.perf_counter()
    store = ActivationStore(model, contexts, hook, batch_size=args.batch_size,
                            buffer_mb=args.buffer_mb, model_batch_size=args.model_batch_size,
                            normalize=True, cache_dir=cache_dir, seed=0, device=args.device,
                            progress=False)
    build_s = time.perf_counter() - start
    timed = TimedStore(store)
    sae = SAE(sae_cfg, device=args.device, seed=0)
    cfg = TrainConfig(n_steps=steps, lr=1e-3, lr_warmup_steps=steps // 20,
                      lr_decay_steps=steps // 5, log_every=10, progress=False)
    start = time.perf_counter()
    result = train_sae(sae, timed, cfg)
    train_s = time.perf_counter() - start
    last = result.history[-1]
    print(f"  {label}: step {last['step']} loss {last['loss']:.4g} L0 {last['l0']:.1f} "
          f"explained variance {last['explained_variance']:.3f}", flush=True)
    return Run(label, hook, f"{sae_cfg.d_in}x{sae_cfg.d_sae} k{sae_cfg.k}",
               steps * args.batch_size, build_s + timed.seconds, train_s - timed.seconds,
               store.forward_passes)


def bench_model(label: str, model, contexts: Tensor, layer: int, expansion: int, k: int,
                steps: int, args: argparse.Namespace, cache_root: Path) -> tuple[list[Run], float]:
    hook = f"blocks.{layer}.hook_resid_pre"
    # Exactly the contexts `steps` batches need (BOS dropped): the store drains them all, so
    # nothing is harvested that is not trained on (beyond the last part-batch).
    needed = math.ceil(steps * args.batch_size / (contexts.shape[1] - 1))
    if needed > len(contexts):
        raise SystemExit(f"{label}: needs {needed} contexts, only {len(contexts)} were made.")
    contexts = contexts[:needed]
    forward_alone = tokens_per_second(model, contexts[:args.model_batch_size].to(args.device),
                                      hook, stop=True, repeats=1)
    d = model.cfg.d_model
    sae_cfg = SAEConfig(d_in=d, d_sae=expansion * d, architecture="topk", k=k)
    # Warm up the SAE side too (first-use costs of the kernels and of Adam's state), so
    # that the cold run is not charged for them and the warm one spared.
    train_sae(SAE(sae_cfg, device=args.device, seed=0),
              lambda step: torch.randn(args.batch_size, d, device=args.device),
              TrainConfig(n_steps=2, log_every=1, progress=False))
    cache_dir = cache_root / label
    cold = train_once(model, contexts, hook, sae_cfg, steps, args, cache_dir, label)
    warm = train_once(model, contexts, hook, sae_cfg, steps, args, cache_dir,
                      f"{label}_warm_cache")
    if warm.forward_passes:
        raise SystemExit(f"{label}: the warm run ran {warm.forward_passes} forward passes; "
                         "the cache was not used.")
    return [cold, warm], forward_alone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="SAE steps on the offline model")
    parser.add_argument("--gpt2-steps", type=int, default=8,
                        help="SAE steps on the GPT-2-shaped model")
    parser.add_argument("--batch-size", type=int, default=1024, help="tokens per SAE step")
    parser.add_argument("--model-batch-size", type=int, default=16, help="contexts per forward")
    parser.add_argument("--buffer-mb", type=float, default=16.0)
    parser.add_argument("--context-len", type=int, default=128)
    parser.add_argument("--offline-layer", type=int, default=2,
                        help="the suite's main layer (n_layers // 2, as in notebook 04)")
    parser.add_argument("--gpt2-layer", type=int, default=8,
                        help="notebook 04's GPT-2 layer (gpt2-small-res-jb at layer 8)")
    parser.add_argument("--offline-expansion", type=int, default=8)
    parser.add_argument("--gpt2-expansion", type=int, default=16)
    parser.add_argument("--offline-k", type=int, default=16)
    parser.add_argument("--gpt2-k", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: "
                        "torch's own setting)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="keep the activation cache here (default: a temporary folder; an "
                             "existing cache makes the cold run warm too)")
    parser.add_argument("--skip-gpt2", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    offline = load_offline(device=args.device)
    gpt2 = None if args.skip_gpt2 else random_gpt2_small(seed=0, device=args.device)
    load_s = time.perf_counter() - start
    n_contexts = math.ceil(max(args.steps, 0 if args.skip_gpt2 else args.gpt2_steps)
                           * args.batch_size / (args.context_len - 1))
    contexts = contexts_for_model(offline, n_contexts, args.context_len, seed=0,
                                  source="storyworld")
    print(f"device {args.device}, {torch.get_num_threads()} torch threads; batch "
          f"{args.batch_size} tokens, {args.model_batch_size} contexts of {args.context_len} "
          f"per forward, buffer {args.buffer_mb:g} MB; models loaded in {load_s:.1f}s",
          flush=True)

    plan = [("offline", offline, args.offline_layer, args.offline_expansion, args.offline_k,
             args.steps)]
    if gpt2 is not None:  # the offline model's token ids all fit GPT-2's vocabulary
        plan.append(("gpt2_random", gpt2, args.gpt2_layer, args.gpt2_expansion, args.gpt2_k,
                     args.gpt2_steps))
    runs: list[Run] = []
    forward_alone: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sae_course_train_lm_") as tmp:
        cache_root = args.cache_dir or Path(tmp)
        for label, model, layer, expansion, k, steps in plan:
            print(f"{label}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}", flush=True)
            model_runs, forward_alone[label] = bench_model(
                label, model, contexts, layer, expansion, k, steps, args, cache_root)
            runs += model_runs

    header = (f"{'run':24s} {'hook':24s} {'SAE':16s} {'tokens':>7s} {'harvest s':>9s} "
              f"{'SAE s':>7s} {'harvest':>7s} {'tok/s':>8s} {'harvest':>9s} {'SAE':>9s} "
              f"{'forwards':>8s}")
    print()
    print(header)
    print(f"{'':24s} {'':24s} {'':16s} {'':>7s} {'':>9s} {'':>7s} {'share':>7s} "
          f"{'end2end':>8s} {'tok/s':>9s} {'tok/s':>9s}")
    for r in runs:
        print(f"{r.label:24s} {r.hook:24s} {r.shape:16s} {r.tokens:7d} {r.harvest_s:9.2f} "
              f"{r.sae_s:7.2f} {r.harvest_share:7.1%} {r.tokens_per_s:8.0f} "
              f"{r.tokens / r.harvest_s:9.0f} {r.tokens / r.sae_s:9.0f} {r.forward_passes:8d}")
    print("forward alone (one stopped harvest of a model batch): " + ", ".join(
        f"{label} {v:,.0f} tok/s" for label, v in forward_alone.items()))
    print(" ".join(f"{r.label}_tokens_per_s={r.tokens_per_s:.0f} "
                   f"{r.label}_harvest_share={r.harvest_share:.3f}" for r in runs))


if __name__ == "__main__":
    main()
