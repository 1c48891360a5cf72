"""One TopK SAE training step at GPT-2 small's shape, against its bound and a dense baseline.

Shape: d_in 768, d_sae 24576, k 32, a batch of 4096 tokens, float32, CPU, Adam.

Measured in the same run, interleaved, median of `--repeats`:
- step: the course's TopK step (`SAE.forward` sparse path: dense encoder product, top-k, a
  decoder and gradients that touch only the k active latents, fused Adam, dead-latent tracking);
- bound: the encoder's dense product alone, x @ W_enc + b_enc: the one dense matmul every
  SAE step must do, so no step can be faster than it (fraction_of_bound <= 1, up to noise);
- dense: the straightforward implementation of the same step (dense latents, dense decoder
  product, autograd everywhere, torch.optim.Adam with its defaults).

Last line: step_tok_s=... bound_tok_s=... fraction_of_bound=... speedup_vs_dense=...
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sae_course.sae import SAE, SAEConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-in", type=int, default=768)
    parser.add_argument("--d-sae", type=int, default=24576)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = SAEConfig(d_in=args.d_in, d_sae=args.d_sae, architecture="topk", k=args.k)
    x = torch.randn(args.batch, args.d_in)

    fast = SAE(cfg, seed=0)
    fast_opt = torch.optim.Adam(fast.parameters(), lr=1e-4, fused=True)
    dense = SAE(cfg, seed=0)
    dense_opt = torch.optim.Adam(dense.parameters(), lr=1e-4)

    def fast_step() -> None:
        out = fast(x, sparse=True)
        out.loss.backward()
        fast.before_optimizer_step()
        fast_opt.step()
        fast_opt.zero_grad(set_to_none=True)
        fast.after_optimizer_step()
        fast.record_firing(out.fired(), x.shape[0])

    def dense_step() -> None:
        out = dense(x, sparse=False)
        out.loss.backward()
        dense_opt.step()
        dense_opt.zero_grad(set_to_none=True)
        dense.record_firing(out.fired(), x.shape[0])

    W_enc, b_enc = fast.W_enc.detach().clone(), fast.b_enc.detach().clone()

    def bound_step() -> None:
        torch.addmm(b_enc, x, W_enc)

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    for fn in (fast_step, dense_step, bound_step):  # warm up (allocations, Adam state)
        fn()
    times: dict[str, list[float]] = {"step": [], "dense": [], "bound": []}
    for _ in range(args.repeats):
        times["step"].append(timed(fast_step))
        times["bound"].append(timed(bound_step))
        times["dense"].append(timed(dense_step))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k}: " + " ".join(f"{t:.3f}s" for t in v))
    step_tok_s = args.batch / med["step"]
    bound_tok_s = args.batch / med["bound"]
    dense_tok_s = args.batch / med["dense"]
    print(f"dense_tok_s={dense_tok_s:.0f} threads={torch.get_num_threads()}")
    print(
        f"step_tok_s={step_tok_s:.0f} bound_tok_s={bound_tok_s:.0f} "
        f"fraction_of_bound={step_tok_s / bound_tok_s:.3f} "
        f"speedup_vs_dense={step_tok_s / dense_tok_s:.2f}"
    )


if __name__ == "__main__":
    main()
