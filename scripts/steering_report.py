"""The steering table of Part 06 on the offline model and the main SAE, for every topic,
both sentiments and both tenses: each method of `steering_eval.METHODS` swept over strengths,
the strength chosen on training prompts within a CE budget and reported on held-out prompts
(AxBench's protocol), and the CE increase at which held-out success first reaches 0.5.

Below the table, every test point: success, CE increase, KL, the clean model's perplexity of
the continuations, their repetition rate (1 - distinct-2) and their share of well-formed
sentences. `--out` writes the whole report as Markdown as well.

    .venv/bin/python scripts/steering_report.py [--prompts 24] [--new-tokens 20]
        [--candidates 192] [--budget 0.5] [--targets topic=cooking tense=past] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sae_course import steering_eval as se
from sae_course.files import write_text_atomic
from sae_course.models import load_model
from sae_course.pretrained import load_pretrained

MAIN_SAE = "blocks.2.hook_resid_pre/topk-1536-k16"
FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)  # strengths, times the mean residual norm
DEFAULT_TARGETS = ([f"topic={t}" for t in se.CONCEPTS["topic"]]
                   + ["sentiment=negative", "sentiment=positive", "tense=past", "tense=present"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=192,
                        help="latents of best input F1 given an output score")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--targets", nargs="+", default=DEFAULT_TARGETS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()

    model = load_model("offline", device="cpu")
    sae = load_pretrained("storyworld-res", MAIN_SAE)
    data = se.steering_data(model, sae, n_prompts=args.prompts, n_contexts=64, n_cost=12,
                            cost_len=64, new_tokens=args.new_tokens, progress=False)
    norm = data.resid_norm
    rows: list[se.TableRow] = []
    detail = [f"{'target':18s} {'method':24s} {'strength':>8s} {'success':>7s} {'CE+':>6s} "
              f"{'KL':>6s} {'ppl':>6s} {'rep':>5s} {'wf':>5s}"]
    for key in args.targets:
        concept, target = key.split("=")
        out = se.target_output_scores(data, concept, target, args.candidates, progress=False)
        methods = se.methods_for(data, concept, target, output=out)
        strengths = {m: [f * norm for f in FRACTIONS] for m in methods}
        strengths["prefix"] = [1, 2, 3]
        points = se.sweep(data, concept, target, methods, strengths)
        rows += se.steering_table(points, concept, target, args.budget)
        for p in points:
            if p.split == "test" and (p.strength > 0 or p.method == "random"):
                name = se.METHOD_LABELS.get(p.method, p.method) if p.strength else "clean"
                detail.append(f"{key:18s} {name:24s} {p.strength:8.2f} {p.success:7.2f} "
                              f"{p.ce_increase:6.3f} {p.kl:6.3f} {p.perplexity:6.2f} "
                              f"{p.repetition:5.2f} {p.well_formed:5.2f}")
        print(se.format_table([r for r in rows if f"{r.concept}={r.target}" == key],
                              args.budget), flush=True)
    table = se.format_table(rows, args.budget)
    setup = (f"{len(data.train_prompts)} training and {len(data.test_prompts)} test prompts, "
             f"{data.new_tokens} sampled tokens (seed {data.sample_seed}); cost on "
             f"{tuple(data.test_cost_tokens.shape)} held-out tokens; strengths "
             f"{', '.join(f'{f:g}' for f in FRACTIONS)} x the mean residual norm {norm:.1f} "
             f"(prefix: 1-3 sentences); output scores for the {args.candidates} latents of "
             f"best input F1; {time.time() - started:.0f} s")
    print("\n" + setup + "\n\n" + table)
    if args.out is not None:
        write_text_atomic(args.out, "# The steering table (offline model, main SAE)\n\n"
                          f"Written by `scripts/steering_report.py`: {setup}.\n\n```\n{table}\n"
                          f"```\n\nEvery test point:\n\n```\n" + "\n".join(detail) + "\n```\n")


if __name__ == "__main__":
    main()
