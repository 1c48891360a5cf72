"""Generation speed on the offline model: new tokens per second, clean and with interventions.

`sae_course.steering.generate` (TransformerLens 4's KV-cached `generate`, greedy) on a batch
of neutral StoryWorld prompts, three ways: no intervention, a direction added at the main
SAE's hook (`AddDirection`), and one SAE latent clamped there (encode, set, decode, error term
added back, so an SAE pass per step). Each timing is the best of a few repeats after a warm-up;
tokens/s counts generated tokens only (batch x new tokens).

    .venv/bin/python benchmarks/generation.py [--batch 16] [--new-tokens 32] [--repeats 3]

Last line: clean_tok_s=... add_tok_s=... clamp_tok_s=... add_slowdown=... clamp_slowdown=...
"""

from __future__ import annotations

import argparse
import time

import torch

import sae_course.storyworld as sw
from sae_course import steering as st
from sae_course.models import load_model
from sae_course.pretrained import load_pretrained

MAIN_SAE = "blocks.2.hook_resid_pre/topk-1536-k16"


def new_tokens_per_second(model, tokens, mask, n_new: int, interventions, repeats: int) -> float:
    def run() -> None:
        st.generate(model, tokens, n_new, interventions, attention_mask=mask)

    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return len(tokens) * n_new / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    model = load_model("offline", device=args.device)
    sae = load_pretrained("storyworld-res", MAIN_SAE, device=args.device)
    hook = sae.cfg.extra["hook_name"]
    prompts = st.neutral_prompts(sw.generate_stories(4 * args.batch, seed=12345))[:args.batch]
    tokens, mask = st.pad_left([model.to_tokens(p)[0] for p in prompts],
                               model.tokenizer.pad_token_id or 0)
    tokens, mask = tokens.to(args.device), mask.to(args.device)
    direction = st.random_direction(sae.W_dec[0].detach(), seed=0)
    ways = {
        "clean": [],
        "add": [st.AddDirection(model, hook, direction, alpha=4.0)],
        "clamp": [st.clamp(model, sae, 0, 5.0)],
    }
    speed = {name: new_tokens_per_second(model, tokens, mask, args.new_tokens, iv, args.repeats)
             for name, iv in ways.items()}
    print(f"offline model ({model.cfg.n_layers} layers, d_model {model.cfg.d_model}) on "
          f"{args.device}, {args.threads} thread(s): batch {len(tokens)} prompts of up to "
          f"{tokens.shape[1]} tokens, {args.new_tokens} new tokens, intervention at {hook}")
    for name, s in speed.items():
        print(f"  {name:6s} {s:8,.0f} new tok/s")
    print(f"clean_tok_s={speed['clean']:.0f} add_tok_s={speed['add']:.0f} "
          f"clamp_tok_s={speed['clamp']:.0f} "
          f"add_slowdown={speed['clean'] / speed['add']:.2f} "
          f"clamp_slowdown={speed['clean'] / speed['clamp']:.2f}")


if __name__ == "__main__":
    main()
