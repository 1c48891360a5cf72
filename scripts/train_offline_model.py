"""Train the course's offline model: a byte-level BPE tokenizer and a small GPT-2 on StoryWorld.

Deterministic for a given seed and thread count (seeded data, seeded init, deterministic
algorithms, a fixed number of torch threads). Writes, atomically, into
`sae_course/assets/storyworld_model/` (or --out): config.json, model.safetensors, the tokenizer
files (loadable by `transformers.AutoTokenizer.from_pretrained`) and MODEL_CARD.md.

    nice -n 10 .venv/bin/python scripts/train_offline_model.py            # the shipped model
    .venv/bin/python scripts/train_offline_model.py --benchmark 20         # tokens/s, no save

Every training context is `<|endoftext|>` followed by n_positions - 1 tokens cut from a stream
of stories that are each preceded by `<|endoftext|>`, so a context starts with BOS just as
TransformerLens' `to_tokens` makes it, and stories start after BOS/EOS.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae_course import storyworld as sw  # noqa: E402
from sae_course.files import write_folder_atomic  # noqa: E402

# Seeds of the data streams, offset from --seed so that none of them overlap.
TOKENIZER_SEED_OFFSET = 1_000
TRAIN_SEED_OFFSET = 2_000
EVAL_SEED_OFFSET = 3_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=sw.MODEL_DIR)
    p.add_argument("--vocab-size", type=int, default=3072)
    p.add_argument("--tokenizer-stories", type=int, default=20_000)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=192)
    p.add_argument("--n-head", type=int, default=6)
    p.add_argument("--n-positions", type=int, default=128)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--eval-contexts", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--card-only", action="store_true",
                   help="re-measure the saved model in --out and rewrite its MODEL_CARD.md")
    p.add_argument("--benchmark", type=int, default=0, metavar="STEPS",
                   help="time this many training steps, print tokens/s and exit (saves nothing)")
    return p.parse_args(argv)


def seed_all(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def train_tokenizer(args: argparse.Namespace):
    """A byte-level BPE tokenizer (GPT-2 style) trained on StoryWorld text."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    texts = sw.sample_texts(args.tokenizer_stories, seed=args.seed + TOKENIZER_SEED_OFFSET)
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(texts, vocab_size=args.vocab_size, min_frequency=2,
                            special_tokens=[sw.BOS_TOKEN], show_progress=False)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token=sw.BOS_TOKEN, eos_token=sw.BOS_TOKEN,
        unk_token=sw.BOS_TOKEN, model_max_length=args.n_positions,
    )
    return tok


def make_contexts(tok, n_contexts: int, n_positions: int, seed: int) -> torch.Tensor:
    """[n_contexts, n_positions] token ids: BOS, then a slice of the EOS-separated story stream."""
    bos = tok.bos_token_id
    per = n_positions - 1
    need = n_contexts * per
    rng = random.Random(seed)
    stream: list[int] = []
    backend = tok.backend_tokenizer
    while len(stream) < need:
        texts = [sw.generate_story(rng).text for _ in range(2000)]
        for enc in backend.encode_batch(texts, add_special_tokens=False):
            stream.append(bos)
            stream.extend(enc.ids)
    body = torch.tensor(stream[:need], dtype=torch.long).view(n_contexts, per)
    return torch.cat([torch.full((n_contexts, 1), bos, dtype=torch.long), body], dim=1)


def build_model(args: argparse.Namespace, tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tok), n_positions=args.n_positions, n_embd=args.n_embd,
        n_layer=args.n_layer, n_head=args.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(config)


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


@torch.no_grad()
def eval_loss(model, contexts: torch.Tensor, batch_size: int = 64) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(contexts), batch_size):
        x = contexts[i:i + batch_size]
        logits = model(x).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
        total += loss.item()
        count += x[:, 1:].numel()
    model.train()
    return total / count


def unigram_entropy(ids: torch.Tensor) -> float:
    """Entropy (nats/token) of the empirical unigram distribution of `ids`."""
    counts = torch.bincount(ids.flatten()).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


@torch.no_grad()
def topic_keeping(model, tok, n: int, seed: int, new_tokens: int = 30) -> tuple[float, int]:
    """Share of greedy continuations of story prompts whose topic is the prompt's topic."""
    model.eval()
    kept = 0
    for i in range(n):
        story = sw.generate_story(seed * 100_003 + i)
        prompt = sw.topic_prompt(story)
        ids = torch.tensor([[tok.bos_token_id] + tok(prompt, add_special_tokens=False)
                            ["input_ids"]])
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=tok.eos_token_id)
        text = tok.decode(out[0, ids.shape[1]:])
        text = text.split(sw.BOS_TOKEN)[0]
        kept += sw.classify_topic(text) == story.factors["topic"]
    model.train()
    return kept / n, n


def save_atomic(out: Path, model, tok, card: str, stats: dict) -> None:
    """Write everything into a fresh folder beside `out`, then swap it in as a whole."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "generation_config.json").unlink(missing_ok=True)
        (tmp / "MODEL_CARD.md").write_text(card, encoding="utf-8")
        (tmp / "training_stats.json").write_text(json.dumps(stats, indent=1), encoding="utf-8")

    write_folder_atomic(out, write)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.card_only:
        write_full_card(args.out)
        return
    command = "nice -n 10 .venv/bin/python scripts/train_offline_model.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    seed_all(args.seed, args.threads)
    t0 = time.time()
    tok = train_tokenizer(args)
    print(f"tokenizer: vocab {len(tok)} in {time.time() - t0:.1f}s", flush=True)

    steps = args.benchmark or args.steps
    t1 = time.time()
    train = make_contexts(tok, steps * args.batch_size, args.n_positions,
                          args.seed + TRAIN_SEED_OFFSET)
    evals = make_contexts(tok, args.eval_contexts, args.n_positions,
                          args.seed + EVAL_SEED_OFFSET)
    print(f"data: {train.numel():,} train tokens, {evals.numel():,} eval tokens "
          f"in {time.time() - t1:.1f}s", flush=True)

    torch.manual_seed(args.seed)
    model = build_model(args, tok)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    model.train()
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))
    losses: list[float] = []
    t2 = time.time()
    bar = tqdm(range(steps), desc="training", mininterval=5)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        x = train[order[step * args.batch_size:(step + 1) * args.batch_size]]
        loss = model(x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
    train_time = time.time() - t2
    tokens = steps * args.batch_size * args.n_positions
    print(f"trained {steps} steps, {tokens:,} tokens in {train_time:.0f}s "
          f"({tokens / train_time:,.0f} tokens/s)", flush=True)
    if args.benchmark:
        print(f"tokens_per_s={tokens / train_time:.0f} params={n_params}")
        return

    final_train = sum(losses[-100:]) / len(losses[-100:])
    final_eval = eval_loss(model, evals)
    entropy = unigram_entropy(evals[:, 1:])
    keep_rate, keep_n = topic_keeping(model, tok, 64, seed=args.seed + EVAL_SEED_OFFSET)
    print(f"train loss {final_train:.4f}  eval loss {final_eval:.4f}  "
          f"unigram entropy {entropy:.4f}  topic kept {keep_rate:.2f} of {keep_n}", flush=True)

    import tokenizers
    import transformers

    stats = dict(
        command=command.strip(), seed=args.seed, vocab=len(tok),
        tokenizer_stories=args.tokenizer_stories, n_layer=args.n_layer, n_embd=args.n_embd,
        n_head=args.n_head, n_positions=args.n_positions, n_params=n_params, steps=steps,
        batch_size=args.batch_size, tokens=tokens, lr=args.lr, warmup=args.warmup,
        weight_decay=args.weight_decay, threads=args.threads, eval_contexts=args.eval_contexts,
        train_minutes=train_time / 60, total_minutes=(time.time() - t0) / 60,
        tokens_per_s=tokens / train_time, machine=platform.machine(),
        final_train=final_train, final_eval=final_eval, entropy=entropy,
        keep_rate=keep_rate, keep_n=keep_n,
        versions=f"torch {torch.__version__}, transformers {transformers.__version__}, "
                 f"tokenizers {tokenizers.__version__}, Python {platform.python_version()}",
        written=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    # Save the model first (with the card's training half), then measure the tables.
    save_atomic(args.out, model, tok, render_card(stats, None), stats)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"saved {args.out} ({size / 1e6:.2f} MB)", flush=True)
    write_full_card(args.out)


def render_card(stats: dict, tables: str | None) -> str:
    """MODEL_CARD.md from the training statistics and (once measured) the result tables."""
    s = stats
    subtopics = "; ".join(f"{t}: {', '.join(subs)}" for t, subs in sw.SUBTOPICS_OF.items())
    bias = ", ".join(f"{t} {p:.2f}" for t, p in sw.SENTIMENT_BIAS.items())
    return f"""# StoryWorld offline model

A small GPT-2-architecture language model (Hugging Face `GPT2LMHeadModel`) trained from scratch
on StoryWorld 2 (`sae_course.storyworld`), the course's synthetic language whose generating
factors (topic and subtopic, sentiment, tense, number, quotes, lists, counting, entities and
their facts) are known for every token. It loads offline through
`TransformerBridge.boot_transformers(MODEL_DIR)`.

## Data
- StoryWorld world seed {sw.WORLD.seed}; {len(sw.TOPICS)} topics, each with its own subtopics
  ({subtopics}).
- {len(sw.WORLD.characters)} characters and {len(sw.CITY_COUNTRY)} cities with fixed facts
  (job, pronoun, pet, home city; a city's country); characters and trip destinations are drawn
  with Zipf weights 1/rank (exponent {sw.ZIPF_EXPONENT}).
- One deliberate correlation: P(positive sentiment | topic) = {bias}.
- Tokenizer: byte-level BPE (`tokenizers.ByteLevelBPETokenizer`), vocab {s["vocab"]}, trained on
  {s["tokenizer_stories"]:,} stories (`sample_texts(n, seed={s["seed"] + TOKENIZER_SEED_OFFSET})`);
  BOS = EOS = UNK = `{sw.BOS_TOKEN}`.
- Training contexts: {s["n_positions"]} tokens each: `{sw.BOS_TOKEN}` + {s["n_positions"] - 1}
  tokens of a stream of freshly generated stories (story seed {s["seed"] + TRAIN_SEED_OFFSET}),
  every story preceded by `{sw.BOS_TOKEN}`. Each context is seen once.
- Evaluation: {s["eval_contexts"]} contexts packed the same way from story seed
  {s["seed"] + EVAL_SEED_OFFSET}, never used in training.

## Model
- n_layer {s["n_layer"]}, n_embd {s["n_embd"]}, n_head {s["n_head"]}, n_positions
  {s["n_positions"]}, tied embeddings, no dropout: {s["n_params"]:,} parameters.

## Training
- Seed {s["seed"]}; {s["steps"]} steps of batch {s["batch_size"]}: {s["tokens"]:,} tokens.
- AdamW (betas 0.9/0.95, weight decay {s["weight_decay"]} on matrices), lr {s["lr"]}, linear
  warm-up {s["warmup"]} steps then cosine to 10%; gradient clipping 1.0.
- Deterministic: `torch.use_deterministic_algorithms(True)`, {s["threads"]} torch threads, CPU.
- Wall time: {s["train_minutes"]:.1f} min of training ({s["tokens_per_s"]:,.0f} tokens/s) on
  {s["machine"]} CPU shared with other jobs; {s["total_minutes"]:.1f} min in all.

## Results
- Final train loss (mean of the last 100 steps): {s["final_train"]:.4f} nats/token.
- Eval loss: {s["final_eval"]:.4f} nats/token.
- Unigram entropy of the eval tokens: {s["entropy"]:.4f} nats/token
  (loss / entropy = {s["final_eval"] / s["entropy"]:.3f}).
- Topic kept by greedy continuations of {s["keep_n"]} story prompts: {s["keep_rate"]:.2f}
  (chance {1 / len(sw.TOPICS):.3f}).
{tables or "- (behavioural and probe tables not measured yet: run with --card-only)"}

## Reproduce
```
{s["command"]}
```
{s["versions"]}.
Written {s["written"]}.
"""


FREQ_CONTEXTS = 400
FREQ_SEED = 888_001  # the card's frequency count: a story seed apart from the training data's


def label_frequencies(tok) -> str:
    """How often each kind of label occurs, and how Zipfian the characters' tail is."""
    from collections import Counter

    ctx = sw.labelled_contexts(tok, FREQ_CONTEXTS, seed=FREQ_SEED)
    names = ["sentiment_word=positive", "sentiment_word=negative", "in_quote", "in_list",
             "in_fact", "is_number", "entity_type=character", "entity_type=city",
             "entity_type=country", "entity_type=pet", "plural", "verb_tense=past"]
    m = ctx.features(names + ["special"]).reshape(-1, len(names) + 1)
    m = m[~m[:, -1]][:, :-1].float()
    shares = ", ".join(f"`{n}` {float(v):.3f}" for n, v in zip(names, m.mean(0), strict=True))
    topical = sum(1 for row in ctx.labels for lab in row if lab["subtopic_word"])
    total = int((ctx.tokens != sw.bos_id(tok)).sum())
    heroes = Counter(s.factors["hero"] for s in ctx.stories)
    ranks = [1, 2, 5, 10, 20, 50, 100, len(sw.WORLD.names)]
    tail = ", ".join(f"rank {r} ({sw.WORLD.names[r - 1]}) {heroes[sw.WORLD.names[r - 1]]}"
                     for r in ranks)
    seen = sum(1 for n in sw.WORLD.names if heroes[n])
    return (f"- {shares}; subtopic words {topical / total:.3f}.\n"
            f"- Heroes of the {len(ctx.stories):,} stories by Zipf rank: {tail}; "
            f"{seen} of {len(sw.WORLD.names)} characters appear as a hero.")


def measure_tables(out: Path) -> str:
    """The behavioural table and the probe table of the model saved in `out`, as Markdown."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from sae_course import probing
    from sae_course.storyworld import behaviour

    tok = AutoTokenizer.from_pretrained(str(out))
    model = GPT2LMHeadModel.from_pretrained(str(out)).eval()
    rows = behaviour.behaviour_table(model, tok)
    probes = probing.story_factor_probe_table(model, tok)
    return f"""
## Label frequencies (share of non-BOS tokens, {FREQ_CONTEXTS} contexts of fresh text)
{label_frequencies(tok)}

## Behaviour (measured on fresh stories, seed {behaviour.BEHAVIOUR_SEED})
Minimal pairs: at each slot the true next word against one the factor rules out; the share of
slots where the model prefers the true text. Fact recall: the true object ranked first among all
objects of its relation (common = the {behaviour.N_COMMON} most common characters and 12 most
common cities; rare = the {behaviour.N_RARE} rarest characters and 12 rarest cities).
`tests/test_storyworld_model.py` fails if any row falls below its threshold.

{behaviour.format_table(rows)}

## Linear probes (story-level factors, residual stream, held-out stories)
{probing.format_probe_table(probes)}
"""


def write_full_card(out: Path) -> None:
    """Measure the tables of the saved model and rewrite its card (atomically)."""
    import json

    from sae_course.files import write_text_atomic

    stats = json.loads((out / "training_stats.json").read_text())
    tables = measure_tables(out)
    write_text_atomic(out / "MODEL_CARD.md", render_card(stats, tables))
    print(tables, flush=True)


if __name__ == "__main__":
    main()
