"""Pretrained SAEs: the suite shipped for the offline model, and GPT-2's public residual SAEs.

- `"storyworld-res"`: SAEs trained by `scripts/train_sae_suite.py` on the offline StoryWorld
  model and shipped inside the package (`sae_course/assets/saes/`, with `SUITE_CARD.md`);
- `"gpt2-small-res-jb"`: Joseph Bloom's residual-stream SAEs for GPT-2 small (one per layer,
  hook `blocks.L.hook_resid_pre`, 24576 ReLU latents), read from the Hugging Face hub repo
  `jbloom/GPT2-Small-SAEs-Reformatted` (or the local Hugging Face cache) without SAELens.

`list_pretrained()` lists what can be loaded; `load_pretrained(release, sae_id)` returns an SAE
in float32 and eval mode that knows its hook and model (`cfg.extra["hook_name"]`,
`cfg.extra["model_name"]`). For GPT-2, `sae_id` is the hook name (or the layer number).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from sae_course.sae import SAE, SAEConfig

SUITE_DIR = Path(__file__).parent / "assets" / "saes"
"""The shipped suite: one SAELens folder per SAE, `suite.json` and `SUITE_CARD.md`."""
SUITE_RELEASE = "storyworld-res"
GPT2_RELEASE = "gpt2-small-res-jb"
GPT2_REPO = "jbloom/GPT2-Small-SAEs-Reformatted"
GPT2_LAYERS = 12
GPT2_D_IN, GPT2_D_SAE = 768, 24576
NEURONPEDIA_URL = "https://www.neuronpedia.org/gpt2-small/{layer}-res-jb/{index}"
RELEASES = (SUITE_RELEASE, GPT2_RELEASE)


@dataclass(frozen=True)
class PretrainedSAE:
    """One loadable SAE: where it comes from, what it is and, for the shipped suite, its metrics.

    `role` says why it is in its release: in the shipped suite "main" (the middle-layer TopK SAE
    Parts 05-06 use), "seed" (the main SAE trained with another seed), "layer" (the main SAE's
    shape at another layer), "width" and "k" (the width family and the k sweep at the main
    layer), "relu" and "matryoshka" (other architectures beside it); "gpt2" for every
    `gpt2-small-res-jb` SAE. `k` is the number of active latents of a TopK-style SAE, None
    for the others (ReLU, JumpReLU, and GPT-2's).
    """

    release: str
    sae_id: str
    hook_name: str
    model_name: str
    architecture: str
    d_sae: int
    metrics: dict[str, Any]
    role: str
    k: int | None


def _suite_index() -> dict[str, Any]:
    path = SUITE_DIR / "suite.json"
    if not path.exists():
        raise FileNotFoundError(
            f"The shipped SAE suite is missing ({path} does not exist). Fix: reinstall the "
            "course, or train it with `python scripts/train_sae_suite.py`."
        )
    return json.loads(path.read_text(encoding="utf-8"))


def list_pretrained(release: str | None = None) -> list[PretrainedSAE]:
    """Every pretrained SAE (of one release, if given); GPT-2's are listed without a download."""
    _check_release(release)
    out: list[PretrainedSAE] = []
    if release in (None, SUITE_RELEASE):
        for e in _suite_index()["entries"]:
            metrics = {k: e[k] for k in ("l0", "explained_variance", "ce_gap", "ce_recovered",
                                         "kl", "dead", "dense", "shrinkage") if k in e}
            out.append(PretrainedSAE(SUITE_RELEASE, e["sae_id"], e["hook_name"], "offline",
                                     e["architecture"], e["d_sae"], metrics, role=e["role"],
                                     k=e.get("k")))
    if release in (None, GPT2_RELEASE):
        for layer in range(GPT2_LAYERS):
            hook = f"blocks.{layer}.hook_resid_pre"
            out.append(PretrainedSAE(GPT2_RELEASE, hook, hook, "gpt2", "relu", GPT2_D_SAE, {},
                                     role="gpt2", k=None))
    return out


def _check_release(release: str | None) -> None:
    if release is not None and release not in RELEASES:
        raise ValueError(f"Unknown release {release!r}: choose one of {', '.join(RELEASES)}.")


def load_pretrained(release: str, sae_id: str | int, device: str | torch.device = "cpu") -> SAE:
    """Load one pretrained SAE in float32 and eval mode (see the module docstring)."""
    _check_release(release)
    if release == SUITE_RELEASE:
        known = [e["sae_id"] for e in _suite_index()["entries"]]
        if sae_id not in known:
            raise ValueError(f"Unknown sae_id {sae_id!r} in {SUITE_RELEASE}: choose one of "
                             + ", ".join(known) + ".")
        sae = SAE.load(SUITE_DIR / str(sae_id), device=device, dtype=torch.float32)
        sae.cfg.extra.setdefault("hook_name", str(sae_id).split("/")[0])
        sae.cfg.extra.setdefault("model_name", "offline")
        return sae.eval()
    return _load_gpt2_res_jb(sae_id, device)


def gpt2_hook_name(sae_id: str | int) -> str:
    """The hook of a `gpt2-small-res-jb` SAE from a layer number or a hook name."""
    if isinstance(sae_id, int) or str(sae_id).isdigit():
        layer = int(sae_id)
        hook = f"blocks.{layer}.hook_resid_pre"
    else:
        hook = str(sae_id)
    valid = [f"blocks.{layer}.hook_resid_pre" for layer in range(GPT2_LAYERS)]
    if hook not in valid:
        raise ValueError(f"{GPT2_RELEASE} has no SAE for {sae_id!r}: its SAEs read "
                         f"{valid[0]} ... {valid[-1]} (or pass the layer, 0-{GPT2_LAYERS - 1}).")
    return hook


def _load_gpt2_res_jb(sae_id: str | int, device: str | torch.device) -> SAE:
    from huggingface_hub import hf_hub_download

    from sae_course.models import _hub_offline

    hook = gpt2_hook_name(sae_id)
    files = {}
    try:
        for name in ("cfg.json", "sae_weights.safetensors"):
            files[name] = hf_hub_download(GPT2_REPO, f"{hook}/{name}",
                                          local_files_only=_hub_offline())
    except Exception as err:  # offline, not cached, or the hub cannot be reached
        raise RuntimeError(
            f"Could not get the {GPT2_RELEASE} SAE for {hook} from the Hugging Face hub "
            f"({type(err).__name__}). Fix: connect to the internet once (it is then cached), "
            f"or use the offline model's SAEs: load_pretrained({SUITE_RELEASE!r}, sae_id) with "
            f"an sae_id from list_pretrained({SUITE_RELEASE!r})."
        ) from err
    raw = json.loads(Path(files["cfg.json"]).read_text(encoding="utf-8"))
    if (raw.get("d_in"), raw.get("d_sae")) != (GPT2_D_IN, GPT2_D_SAE):
        raise ValueError(f"{files['cfg.json']} describes d_in={raw.get('d_in')}, "
                         f"d_sae={raw.get('d_sae')}, not GPT-2 small's {GPT2_D_IN} x "
                         f"{GPT2_D_SAE}: the cached file is not {GPT2_RELEASE}'s.")
    cfg = SAEConfig(d_in=GPT2_D_IN, d_sae=GPT2_D_SAE, architecture="relu",
                    apply_b_dec_to_input=True,
                    extra={"hook_name": hook, "model_name": "gpt2", "release": GPT2_RELEASE,
                           "context_size": raw.get("context_size", 128),
                           "neuronpedia": NEURONPEDIA_URL.replace(
                               "{layer}", hook.split(".")[1])})
    weights = load_file(files["sae_weights.safetensors"])
    sae = SAE(cfg, device=device, dtype=torch.float32, seed=None)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            if name not in weights:
                raise ValueError(f"{files['sae_weights.safetensors']} has no tensor {name!r}.")
            target = getattr(sae, name)
            if tuple(weights[name].shape) != tuple(target.shape):
                raise ValueError(f"{name} has shape {tuple(weights[name].shape)} in "
                                 f"{files['sae_weights.safetensors']}, expected "
                                 f"{tuple(target.shape)}.")
            target.copy_(weights[name].float())
    return sae.eval()
