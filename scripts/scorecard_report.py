"""Print the ground-truth scorecard of a shipped SAE (notebook 05's measurements, in full).

    .venv/bin/python scripts/scorecard_report.py                      # the main SAE
    .venv/bin/python scripts/scorecard_report.py \
        --sae-id blocks.2.hook_resid_pre/matryoshka-1536-k16

On fresh StoryWorld contexts (seed 50 000, never trained on): the scorecard table (every
label's best single latent with held-out F1, k-sparse probes against the raw-residual probe),
the count of labels with F1 >= 0.8 and >= 0.6, and the median detection score of the label
explanations over every live latent. The last line is `name=value` pairs.
"""

from __future__ import annotations

import argparse
import time

import torch

from sae_course import features as feat
from sae_course import pretrained
from sae_course import scorecard as sc
from sae_course.activations import harvest
from sae_course.models import load_offline
from sae_course.storyworld import FEATURES, labelled_contexts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sae-id", default=None, help="default: the suite's main SAE")
    p.add_argument("--contexts", type=int, default=384)
    p.add_argument("--seed", type=int, default=50_000)
    args = p.parse_args()
    start = time.time()
    suite = pretrained.list_pretrained(pretrained.SUITE_RELEASE)
    sae_id = args.sae_id or next(s.sae_id for s in suite if s.role == "main")
    model = load_offline()
    sae = pretrained.load_pretrained(pretrained.SUITE_RELEASE, sae_id)
    hook = sae.cfg.extra["hook_name"]
    ctx = labelled_contexts(model.tokenizer, args.contexts, seed=args.seed)
    acts = feat.latent_activations(model, sae, ctx)
    residual = torch.cat([harvest(model, ctx.tokens[i:i + 32], hook)
                          for i in range(0, len(ctx), 32)])
    cards = sc.scorecard(acts, ctx, FEATURES, residual=residual)
    print(f"# {sae_id} on {len(ctx)} contexts ({acts.n_counted:,} tokens)\n")
    print(sc.format_scorecard(cards))
    train, test = sc.split_rows(ctx)
    labels = sc.counted_features(ctx, FEATURES)
    labels[test] = False
    explainer = sc.LabelExplainer(sc.label_scores(acts.restrict(train), labels, FEATURES), ctx)
    live = (acts.firing_counts() > 0).nonzero()[:, 0].tolist()
    det = sc.detection_scores(explainer, acts.restrict(test), live)
    scores = torch.tensor([s for _, s in det.values()])
    f1 = torch.tensor([c.f1 for c in cards])
    print(f"\n{len(cards)} labels scored; F1 >= 0.8: {int((f1 >= 0.8).sum())}; "
          f">= 0.6: {int((f1 >= 0.6).sum())}; detection over {len(det)} live latents: median "
          f"{float(scores.median()):.3f}; {time.time() - start:.0f} s")
    print(f"labels={len(cards)} f1_ge_0.8={int((f1 >= 0.8).sum())} "
          f"f1_ge_0.6={int((f1 >= 0.6).sum())} median_f1={float(f1.median()):.3f} "
          f"median_detection={float(scores.median()):.3f} "
          f"live_latents={len(det)}")


if __name__ == "__main__":
    main()
