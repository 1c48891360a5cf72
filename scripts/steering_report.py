"""Steering each StoryWorld topic on the offline model: success and cost per method and alpha.

For every topic: the main SAE's latent with the best F1 for `topic_word=<topic>` (on labelled
contexts of seed 0), and three directions of the same norm added at its hook: the latent's
decoder row, the difference of means of the residual (tokens of stories of that topic minus
the rest, rescaled to the row's norm) and a seeded random direction. Success: the share of
greedy continuations of held-out neutral prompts the topic scorer assigns to the topic. Cost:
CE increase and KL(clean || steered) on held-out StoryWorld contexts, the clean model's
perplexity of the continuations, their repetition rate (1 - distinct-2) and their share of
well-formed sentences. Alpha here is not chosen on training prompts (that is the notebook's
protocol); every alpha is shown.

    .venv/bin/python scripts/steering_report.py [--prompts 32] [--new-tokens 20] [--alphas 4 8]
"""

from __future__ import annotations

import argparse

import torch

import sae_course.storyworld as sw
from sae_course import steering as st
from sae_course.activations import harvest
from sae_course.features import latent_activations
from sae_course.models import load_model
from sae_course.pretrained import load_pretrained
from sae_course.scorecard import counted_features, label_scores

MAIN_SAE = "blocks.2.hook_resid_pre/topk-1536-k16"
PROMPT_SEED = 12345  # held-out prompts: stories no SAE or latent choice saw
COST_SEED = 777  # held-out contexts for CE and KL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--alphas", type=float, nargs="+", default=[4.0, 8.0])
    parser.add_argument("--topics", nargs="+", default=sw.TOPICS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)

    model = load_model("offline", device="cpu")
    sae = load_pretrained("storyworld-res", MAIN_SAE)
    hook = sae.cfg.extra["hook_name"]
    contexts = sw.labelled_contexts(model.tokenizer, 32, 128, seed=0)
    word_names = [f"topic_word={t}" for t in sw.TOPICS]
    acts = latent_activations(model, sae, contexts, progress=False)
    scores = label_scores(acts, counted_features(contexts, word_names), word_names)
    resid = harvest(model, contexts.tokens, hook)
    story_topic = counted_features(contexts, [f"topic={t}" for t in sw.TOPICS])
    counted = contexts.story_index.reshape(-1) >= 0
    flat = resid.reshape(-1, resid.shape[-1])[counted]
    prompts = st.neutral_prompts(sw.generate_stories(2 * args.prompts, PROMPT_SEED))
    prompts = prompts[:args.prompts]
    prompt_tokens = [model.to_tokens(p)[0] for p in prompts]
    cost_tokens = sw.labelled_contexts(model.tokenizer, 16, 64, seed=COST_SEED).tokens
    decode = model.tokenizer.decode

    def measure(interventions, topic):
        conts = st.continuations(model, prompts, args.new_tokens, interventions)
        texts = [decode(c) for c in conts]
        cost = st.intervention_cost(model, cost_tokens, interventions)
        return dict(
            success=st.success_rate(texts, "topic", topic), ce_up=cost.ce_increase, kl=cost.kl,
            ppl=st.continuation_perplexity(model, prompt_tokens, conts),
            rep=sum(map(st.repetition_rate, texts)) / len(texts),
            wf=st.well_formed_fraction(texts),
        )

    header = f"{'topic':9s} {'latent':>6s} {'F1':>5s} {'method':7s} {'alpha':>5s} " \
             f"{'success':>7s} {'CE+':>6s} {'KL':>6s} {'ppl':>6s} {'rep':>5s} {'wf':>5s}"
    print(f"{len(prompts)} held-out neutral prompts, {args.new_tokens} greedy tokens; cost on "
          f"{tuple(cost_tokens.shape)} held-out tokens; hook {hook}")
    print(header)
    for topic in args.topics:
        t = sw.TOPICS.index(topic)
        latent = int(scores.f1[:, t].argmax())
        f1 = float(scores.f1[latent, t])
        row = st.decoder_direction(sae, latent)
        dom = st.difference_of_means(flat, story_topic[counted][:, t])
        dom = dom * row.norm() / dom.norm()
        clean = measure([], topic)
        print(f"{topic:9s} {latent:6d} {f1:5.2f} {'none':7s} {0:5.1f} {clean['success']:7.2f} "
              f"{0:6.3f} {0:6.3f} {clean['ppl']:6.2f} {clean['rep']:5.2f} {clean['wf']:5.2f}")
        for alpha in args.alphas:
            for name, v in (("sae_row", row), ("dom", dom),
                            ("random", st.random_direction(row, seed=0))):
                m = measure([st.AddDirection(model, hook, v, alpha)], topic)
                print(f"{topic:9s} {latent:6d} {f1:5.2f} {name:7s} {alpha:5.1f} "
                      f"{m['success']:7.2f} {m['ce_up']:6.3f} {m['kl']:6.3f} {m['ppl']:6.2f} "
                      f"{m['rep']:5.2f} {m['wf']:5.2f}", flush=True)


if __name__ == "__main__":
    main()
