"""Train the SAE suite shipped with the course, on the offline StoryWorld model.

Deterministic for a given seed (seeded data, seeded SAE init, one torch thread). For every
SAE of `SUITE` it harvests the residual stream at its hook from fresh StoryWorld contexts,
normalises it to a mean norm sqrt(d_model) for training, trains with `train_sae`, folds the
normalisation into the weights (the shipped SAE takes the model's raw activations), stores
it in SAELens folder format in float16 (cfg.json, sae_weights.safetensors, sparsity.safetensors)
and evaluates what was stored, loaded back as float32, on fresh text never used in training.
Writes `sae_course/assets/saes/` (atomically, as one folder) with `suite.json` (every metric)
and `SUITE_CARD.md`.

    nice -n 10 .venv/bin/python scripts/train_sae_suite.py            # the shipped suite
    .venv/bin/python scripts/train_sae_suite.py --only main --steps 200 --out /tmp/suite
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae_course import activations as acts_lib  # noqa: E402
from sae_course import text as text_lib  # noqa: E402
from sae_course.evaluation import evaluate_lm, mean_max_cosine_similarity  # noqa: E402
from sae_course.files import write_folder_atomic  # noqa: E402
from sae_course.models import load_model  # noqa: E402
from sae_course.pretrained import SUITE_DIR, SUITE_RELEASE  # noqa: E402
from sae_course.sae import SAE, SAEConfig  # noqa: E402
from sae_course.splitting import counterpart_fraction  # noqa: E402
from sae_course.training import TrainConfig, train_sae  # noqa: E402

TRAIN_SEED = 10_000  # StoryWorld stream of the training contexts
EVAL_SEED = 20_000  # ... and of the evaluation contexts (never trained on)


@dataclass(frozen=True)
class Spec:
    """One SAE of the suite."""

    sae_id: str
    layer: int
    architecture: str
    d_sae: int
    k: int | None = None
    sparsity_coefficient: float = 0.0
    seed: int = 0
    role: str = ""

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_pre"

    def steps(self, main_steps: int) -> int:
        """The main SAE, its reseeds and the Matryoshka SAE beside it train for `main_steps`;
        the others for half (the shipped suite passed a third of the main steps for them)."""
        return main_steps if self.role in ("main", "seed", "matryoshka") else main_steps // 2


MAIN_LAYER, MAIN_WIDTH, MAIN_K = 2, 1536, 16


def _suite(n_layers: int) -> list[Spec]:
    main = Spec(f"blocks.{MAIN_LAYER}.hook_resid_pre/topk-{MAIN_WIDTH}-k{MAIN_K}", MAIN_LAYER,
                "topk", MAIN_WIDTH, MAIN_K, role="main")
    out = [main]
    for layer in range(n_layers):
        if layer != MAIN_LAYER:
            out.append(Spec(f"blocks.{layer}.hook_resid_pre/topk-{MAIN_WIDTH}-k{MAIN_K}", layer,
                            "topk", MAIN_WIDTH, MAIN_K, role="layer"))
    for width in (192, 384, 768):
        out.append(Spec(f"blocks.{MAIN_LAYER}.hook_resid_pre/topk-{width}-k{MAIN_K}",
                        MAIN_LAYER, "topk", width, MAIN_K, role="width"))
    for k in (4, 32):
        out.append(Spec(f"blocks.{MAIN_LAYER}.hook_resid_pre/topk-{MAIN_WIDTH}-k{k}", MAIN_LAYER,
                        "topk", MAIN_WIDTH, k, role="k"))
    for seed in (1, 2):
        out.append(Spec(f"blocks.{MAIN_LAYER}.hook_resid_pre/topk-{MAIN_WIDTH}-k{MAIN_K}-seed{seed}",
                        MAIN_LAYER, "topk", MAIN_WIDTH, MAIN_K, seed=seed, role="seed"))
    out.append(Spec(f"blocks.{MAIN_LAYER}.hook_resid_pre/matryoshka-{MAIN_WIDTH}-k{MAIN_K}",
                    MAIN_LAYER, "matryoshka", MAIN_WIDTH, MAIN_K, role="matryoshka"))
    out.append(Spec(f"blocks.{MAIN_LAYER}.hook_resid_pre/relu-{MAIN_WIDTH}", MAIN_LAYER,
                    "relu", MAIN_WIDTH, sparsity_coefficient=RELU_L1_COEFFICIENT, role="relu"))
    return out


RELU_L1_COEFFICIENT = float(os.environ.get("SUITE_RELU_L1", "2.0"))  # on normalised inputs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=SUITE_DIR)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--train-tokens", type=int, default=1_500_000,
                   help="activations harvested per layer (training cycles through them)")
    p.add_argument("--eval-contexts", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--only", default=None,
                   help="comma-separated roles to train (main, layer, width, k, seed, matryoshka, "
                        "relu)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dead-after", type=int, default=250_000,
                   help="during training, AuxK revives latents silent for this many tokens")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="SUITE_DIR",
                   help="combine suites trained separately (e.g. by roles, in parallel) into "
                        "--out instead of training; a later one's SAE replaces an earlier "
                        "one's of the same sae_id")
    return p.parse_args(argv)


def harvest_layer(model, hook_name: str, n_tokens: int, seed: int) -> torch.Tensor:
    """[n_tokens, d] activations at `hook_name` (BOS excluded) from fresh StoryWorld contexts."""
    per_context = model.cfg.n_ctx - 1
    contexts = text_lib.contexts_for_model(model, n_tokens // per_context + 1, seed=seed,
                                           source="storyworld")
    chunks = []
    for i in range(0, len(contexts), 64):
        chunks.append(acts_lib.flatten_activations(
            acts_lib.harvest(model, contexts[i:i + 64], hook_name)))
    return torch.cat(chunks)[:n_tokens]


def train_one(spec: Spec, acts: torch.Tensor, scale: float, args: argparse.Namespace) -> SAE:
    cfg = SAEConfig(d_in=acts.shape[1], d_sae=spec.d_sae, architecture=spec.architecture,
                    k=spec.k, sparsity_coefficient=spec.sparsity_coefficient,
                    dead_after_tokens=args.dead_after,
                    extra={"hook_name": spec.hook_name, "model_name": "offline",
                           "sae_id": spec.sae_id, "release": SUITE_RELEASE})
    sae = SAE(cfg, seed=spec.seed)
    data_gen = torch.Generator().manual_seed(spec.seed)
    order: list[torch.Tensor] = []

    def batch(step: int) -> torch.Tensor:
        per_epoch = len(acts) // args.batch_size
        if step % per_epoch == 0 or not order:
            order[:] = [torch.randperm(len(acts), generator=data_gen)]
        i = step % per_epoch
        rows = order[0][i * args.batch_size:(i + 1) * args.batch_size]
        return acts_lib.normalize(acts[rows], scale)

    steps = spec.steps(args.steps)
    train_cfg = TrainConfig(
        n_steps=steps, lr=args.lr, lr_warmup_steps=steps // 20, lr_decay_steps=steps // 5,
        sparsity_warmup_steps=steps // 10 if spec.architecture == "relu" else 0,
        log_every=50, seed=spec.seed, threads=args.threads,
    )
    train_sae(sae, batch, train_cfg)
    acts_lib.fold_scale_into_sae(sae, scale)
    return sae.eval()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.merge:
        merge(args.merge, args.out, argv)
        return
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    model = load_model("offline", device="cpu")
    suite = _suite(model.cfg.n_layers)
    if args.only:
        roles = set(args.only.split(","))
        suite = [s for s in suite if s.role in roles]
    eval_tokens = text_lib.contexts_for_model(model, args.eval_contexts, seed=EVAL_SEED,
                                              source="storyworld")

    def write(tmp: Path) -> None:
        """Train every SAE of `suite` into `tmp`, with suite.json and SUITE_CARD.md."""
        entries, saes = [], {}
        for layer in sorted({s.layer for s in suite}):
            hook = f"blocks.{layer}.hook_resid_pre"
            t1 = time.time()
            acts = harvest_layer(model, hook, args.train_tokens, TRAIN_SEED + layer)
            scale = float(acts_lib.norm_scale_factor(acts))
            print(f"{hook}: {len(acts):,} activations in {time.time() - t1:.0f}s, "
                  f"scale {scale:.4f}", flush=True)
            for spec in [s for s in suite if s.layer == layer]:
                t2 = time.time()
                sae = train_one(spec, acts, scale, args)
                minutes = (time.time() - t2) / 60
                folder = tmp / spec.sae_id
                sae.to(torch.float16).save(folder)
                stored = SAE.load(folder, dtype=torch.float32).eval()
                ev = evaluate_lm(stored, model, eval_tokens, spec.hook_name, batch_size=32,
                                 progress=False)
                save_file({"sparsity": ev.log10_density.float().contiguous()},
                          str(folder / "sparsity.safetensors"))
                saes[spec.sae_id] = stored
                entry = {"sae_id": spec.sae_id, "role": spec.role, "hook_name": spec.hook_name,
                         "architecture": spec.architecture, "d_sae": spec.d_sae, "k": spec.k,
                         "sparsity_coefficient": spec.sparsity_coefficient, "seed": spec.seed,
                         "train_steps": spec.steps(args.steps), "batch_size": args.batch_size,
                         "dead_after_tokens": args.dead_after,
                         "train_tokens": spec.steps(args.steps) * args.batch_size,
                         "distinct_train_tokens": len(acts), "train_minutes": minutes,
                         "input_scale_folded": scale, **ev.as_dict()}
                entries.append(entry)
                print(f"{spec.sae_id}: L0 {ev.l0:.1f}  EV {ev.explained_variance:.4f}  "
                      f"CE gap {ev.ce_gap:.4f}  dead {ev.dead}  ({minutes:.1f} min)", flush=True)
            del acts
        seeds = _seed_report([e["sae_id"] for e in entries if e["role"] in ("main", "seed")],
                             saes)
        summary = {"release": SUITE_RELEASE, "model_name": "offline", "entries": entries,
                   "seeds": seeds, "eval_contexts": args.eval_contexts,
                   "eval_seed": EVAL_SEED, "train_seed": TRAIN_SEED,
                   "minutes": (time.time() - t0) / 60, "steps": args.steps,
                   "batch_size": args.batch_size, "lr": args.lr,
                   "command": "nice -n 10 .venv/bin/python scripts/train_sae_suite.py "
                              + " ".join(argv if argv is not None else sys.argv[1:]),
                   "versions": f"torch {torch.__version__}, Python {platform.python_version()}",
                   "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
        (tmp / "suite.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        (tmp / "SUITE_CARD.md").write_text(render_card(summary), encoding="utf-8")

    write_folder_atomic(args.out, write)
    print((args.out / "SUITE_CARD.md").read_text(encoding="utf-8"))


def merge(parts: list[Path], out: Path, argv: list[str] | None) -> None:
    """Combine suite folders trained separately into one suite at `out` (atomically)."""
    summaries = [json.loads((p / "suite.json").read_text(encoding="utf-8")) for p in parts]

    def write(tmp: Path) -> None:
        entries: list[dict] = []
        for part, summary in zip(parts, summaries, strict=True):
            for e in summary["entries"]:  # a later part's SAE replaces an earlier one's
                if (tmp / e["sae_id"]).exists():
                    shutil.rmtree(tmp / e["sae_id"])
                    entries = [x for x in entries if x["sae_id"] != e["sae_id"]]
                shutil.copytree(part / e["sae_id"], tmp / e["sae_id"])
                cfg = json.loads((part / e["sae_id"] / "cfg.json").read_text(encoding="utf-8"))
                e.setdefault("batch_size", summary["batch_size"])
                e.setdefault("dead_after_tokens", cfg["sae_course"]["dead_after_tokens"])
                entries.append(e)
        order = ["main", "seed", "layer", "width", "k", "matryoshka", "relu"]
        entries.sort(key=lambda e: (order.index(e["role"]), e["hook_name"], e["d_sae"],
                                    e["k"] or 0))
        ids = [e["sae_id"] for e in entries if e["role"] in ("main", "seed")]
        saes = {i: SAE.load(tmp / i, dtype=torch.float32) for i in ids}
        summary = {**summaries[0], "entries": entries, "seeds": _seed_report(ids, saes),
                   "minutes": sum(s["minutes"] for s in summaries),
                   "command": "; ".join(s["command"] for s in summaries)
                   + "; .venv/bin/python scripts/train_sae_suite.py "
                   + " ".join(argv if argv is not None else sys.argv[1:])}
        (tmp / "suite.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        (tmp / "SUITE_CARD.md").write_text(render_card(summary), encoding="utf-8")

    write_folder_atomic(out, write)
    print((out / "SUITE_CARD.md").read_text(encoding="utf-8"))


def _seed_report(ids: list[str], saes: dict[str, SAE]) -> dict:
    """Cross-seed shared latents of the main SAE and its reseeds."""
    if len(ids) < 2:
        return {}
    pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]]
    shared = {f"{a} vs {b}": counterpart_fraction(saes[a].W_dec, saes[b].W_dec)
              for a, b in pairs}
    mmcs = {f"{a} vs {b}": float(mean_max_cosine_similarity(
        saes[a].W_dec.detach(), saes[b].W_dec.detach())) for a, b in pairs}
    return {"ids": ids, "shared_latents_cos_0.9": shared, "mmcs": mmcs}


SEED_SPREAD_METRICS = ("explained_variance", "ce_gap", "kl", "shrinkage", "dead", "dense")


def render_card(summary: dict) -> str:
    """SUITE_CARD.md: how the suite was trained and every metric of every SAE."""
    cols = ["sae_id", "l0", "explained_variance", "ce_gap", "ce_recovered", "kl", "shrinkage",
            "dead", "dense", "train_minutes"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for e in summary["entries"]:
        cells = []
        for c in cols:
            v = e[c]
            cells.append(f"`{v}`" if c == "sae_id" else f"{v:.4f}" if isinstance(v, float)
                         else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    e0 = summary["entries"][0]
    train_lines = ["| sae_id | steps | batch | tokens seen | distinct activations | "
                   "dead_after_tokens |", "|---|---|---|---|---|---|"]
    for e in summary["entries"]:
        train_lines.append(f"| `{e['sae_id']}` | {e['train_steps']} | {e.get('batch_size')} | "
                           f"{e['train_tokens']:,} | {e['distinct_train_tokens']:,} | "
                           f"{e.get('dead_after_tokens')} |")
    seeds = summary.get("seeds") or {}
    seed_lines = "\n".join(f"- {k}: {v:.3f} of latents have a counterpart (cosine >= 0.9); "
                           f"MMCS {seeds['mmcs'][k]:.3f}"
                           for k, v in seeds.get("shared_latents_cos_0.9", {}).items())
    seeded = [e for e in summary["entries"] if e["role"] in ("main", "seed")]
    if len(seeded) > 1:
        seed_lines += f"\n- Spread over the {len(seeded)} seeds (min to max, range):"
        for m in SEED_SPREAD_METRICS:
            values = [e[m] for e in seeded]
            seed_lines += (f"\n  - {m}: {min(values):.4g} to {max(values):.4g} "
                           f"({max(values) - min(values):.4g})")
    return f"""# The StoryWorld SAE suite (`{summary["release"]}`)

Sparse autoencoders on the residual stream of the course's offline model, in SAELens folder
format (cfg.json with a `metadata` block, sae_weights.safetensors stored in float16,
sparsity.safetensors with log10 firing densities). Load them with
`sae_course.pretrained.load_pretrained("{summary["release"]}", sae_id)`: they come back in
float32, in eval mode, and take the model's raw activations (the training normalisation is
folded into the weights).

## Training
- Activations: harvested per layer (BOS excluded) from StoryWorld contexts of 128 tokens (story
  seed {summary["train_seed"]} + layer), normalised to a mean norm sqrt(d_model) for training;
  Adam (lr {summary["lr"]}, 5% warm-up, linear decay over the last 20%) cycling through them.
  AuxK (k_aux 256, coefficient 1/32) revives latents silent for `dead_after_tokens` training
  tokens; these SAEs were trained with the AuxK error unnormalised (the library now divides
  it by the residual's variance, as Gao et al.'s code does). Per SAE:

{chr(10).join(train_lines)}
- Deterministic: seeded data order and init, 1 torch thread, CPU. {summary["minutes"]:.1f} min
  of training and evaluation for the whole suite (parts may have run side by side).

## Metrics (measured on the stored float16 weights, on {summary["eval_contexts"]} fresh contexts)
Dead = no activation on any of the {e0["n_tokens"]:,} evaluation tokens (the window N); dense =
firing on more than 10% of them. CE in nats per token; see `docs/metrics.md`.

{chr(10).join(lines)}

## Seeds
{seed_lines or "- (not trained)"}

## Reproduce
```
{summary["command"]}
```
{summary["versions"]}. Written {summary["written"]}.
"""


if __name__ == "__main__":
    main()
