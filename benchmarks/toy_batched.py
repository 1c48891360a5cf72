"""Time training N toy models as one batched model against N separate models.

Same sizes, steps and batch size both ways; the batched model has an instance dimension
(`n_inst = N`), the separate ones are N models with `n_inst = 1` trained one after the other
(`toy_models.train_separate`).

    python benchmarks/toy_batched.py [--models 20] [--steps 500] [--features 5] [--hidden 2]

The last line is `batched_s=... separate_s=... speedup=...`.
"""

from __future__ import annotations

import argparse
import time

import torch

from sae_course import toy_models as tm
from sae_course.settings import pick_device


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--features", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for both runs (default 1, as in training)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    probs = tm.feature_probabilities_log(args.models, low=0.01).unsqueeze(1)
    importance = 0.9 ** torch.arange(float(args.features))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # warm-up (first-use costs: lazy imports, allocator) so neither side pays them
    warm = tm.ToyModel(args.features, args.hidden, 2, 0.1, seed=0, device=device)
    tm.train_toy_model(warm, 10, args.batch_size, progress=False, num_threads=args.threads)

    sync()
    start = time.perf_counter()
    batched = tm.ToyModel(args.features, args.hidden, args.models, probs, importance, seed=0,
                          device=device)
    tm.train_toy_model(batched, args.steps, args.batch_size, seed=0, progress=False,
                       num_threads=args.threads)
    sync()
    batched_s = time.perf_counter() - start

    start = time.perf_counter()
    tm.train_separate(args.models, args.features, args.hidden, probs, importance, args.steps,
                      args.batch_size, seed=0, device=device, progress=False,
                      num_threads=args.threads)
    sync()
    separate_s = time.perf_counter() - start

    print(f"device={device} models={args.models} steps={args.steps} features={args.features} "
          f"hidden={args.hidden} batch_size={args.batch_size} threads={args.threads}")
    print(f"batched_s={batched_s:.3f} separate_s={separate_s:.3f} "
          f"speedup={separate_s / batched_s:.2f}")


if __name__ == "__main__":
    main()
