"""Harvest speed: tokens per second with and without stopping the forward pass after the hook.

Two models: the offline StoryWorld model, and a random-weight model of GPT-2 small's exact
shape (`random_gpt2_small`, no download; speed does not depend on the weights). The hook is
`blocks.{L}.hook_resid_pre` at an early layer L (printed), so the layers after it are what the
early stop saves. Each timing is the best of a few repeats after a warm-up.

    .venv/bin/python benchmarks/harvest.py [--contexts 16] [--context-len 128] [--repeats 3]

Last line: offline_full_tok_s=... offline_stop_tok_s=... offline_speedup=...
gpt2_full_tok_s=... gpt2_stop_tok_s=... gpt2_speedup=...
"""

from __future__ import annotations

import argparse
import time

import torch

from sae_course.activations import harvest
from sae_course.models import load_model, random_gpt2_small
from sae_course.text import contexts_for_model


def tokens_per_second(model, tokens: torch.Tensor, hook: str, stop: bool, repeats: int) -> float:
    harvest(model, tokens, hook, stop_early=stop)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        harvest(model, tokens, hook, stop_early=stop)
        best = min(best, time.perf_counter() - start)
    return tokens.numel() / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, default=16)
    parser.add_argument("--context-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    results = {}
    offline = load_model("offline", device=args.device)
    tokens = contexts_for_model(offline, args.contexts, args.context_len, seed=0).to(args.device)
    for label, model in (("offline", offline), ("gpt2", None)):
        if model is None:
            model = random_gpt2_small(seed=0, device=args.device)
        layer = 1 if model.cfg.n_layers > 2 else 0
        hook = f"blocks.{layer}.hook_resid_pre"
        full = tokens_per_second(model, tokens, hook, stop=False, repeats=args.repeats)
        stop = tokens_per_second(model, tokens, hook, stop=True, repeats=args.repeats)
        results[label] = (full, stop)
        print(f"{label}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, hook {hook}, "
              f"{tuple(tokens.shape)} tokens on {args.device}: full {full:,.0f} tok/s, "
              f"stopped {stop:,.0f} tok/s, speedup {stop / full:.2f}x")
    print(" ".join(
        f"{label}_full_tok_s={full:.0f} {label}_stop_tok_s={stop:.0f} "
        f"{label}_speedup={stop / full:.2f}"
        for label, (full, stop) in results.items()
    ))


if __name__ == "__main__":
    main()
