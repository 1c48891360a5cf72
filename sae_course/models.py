"""Loading the language model whose activations the course studies.

Two models, one loading path (TransformerLens 4's `TransformerBridge`, with
`enable_compatibility_mode()` so activations match those public GPT-2 SAEs were trained on:
layer norm folded into the weights, writing weights centred):

- `"gpt2"`: GPT-2 small from the Hugging Face hub (or the local Hugging Face cache);
- `"offline"`: the course's own small GPT-2-architecture model, trained on the synthetic
  StoryWorld language, shipped in the package (`sae_course/assets/storyworld_model/`);
- `"auto"` (the default): GPT-2 when it can be loaded, else the offline model, saying so.

`random_gpt2_small(seed)` builds a random-weight model of GPT-2 small's exact shape with no
download, for tests and benchmarks at real size.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import torch

from sae_course.settings import MODELS, _choice, pick_device

GPT2_NAME = "gpt2"  # the Hugging Face repo TransformerLens boots for GPT-2 small
GPT2_REPOS = ("gpt2", "openai-community/gpt2")  # the names it may be cached under
OFFLINE_NAME = "offline"
REACHABILITY_TIMEOUT_S = 3.0


class ModelUnavailable(RuntimeError):
    """The requested model cannot be loaded here; the message says why and what to do."""


def offline_model_dir() -> Path:
    """The folder of the offline StoryWorld model (a Hugging Face GPT2LMHeadModel folder)."""
    from sae_course import storyworld  # the generator module owns the model's path

    return Path(storyworld.MODEL_DIR)


def _hub_offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def gpt2_in_cache() -> bool:
    """Whether GPT-2 small's config and weights are in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    for repo in GPT2_REPOS:
        config = try_to_load_from_cache(repo, "config.json")
        weights = [
            try_to_load_from_cache(repo, f) for f in ("model.safetensors", "pytorch_model.bin")
        ]
        if isinstance(config, str) and any(isinstance(w, str) for w in weights):
            return True
    return False


def gpt2_reachable(timeout: float = REACHABILITY_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub answers for GPT-2 within `timeout` seconds."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    request = urllib.request.Request(
        f"{endpoint}/{GPT2_NAME}/resolve/main/config.json", method="HEAD"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError as err:  # an answer, even a redirect-ish error, means reachable
        return err.code < 500
    except (OSError, ValueError):
        return False


def gpt2_status() -> tuple[bool, str]:
    """(can GPT-2 be loaded, why not): cached locally, or the hub is reachable and allowed."""
    if gpt2_in_cache():
        return True, "GPT-2 is in the local Hugging Face cache"
    if _hub_offline():
        return False, (
            "HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set and GPT-2 is not in the local "
            "Hugging Face cache"
        )
    if gpt2_reachable():
        return True, "the Hugging Face hub is reachable"
    return False, "the Hugging Face hub (huggingface.co) cannot be reached and GPT-2 is not cached"


def _gpt2_fix() -> str:
    return (
        "Fix: connect to the internet (and unset HF_HUB_OFFLINE) once so GPT-2 is downloaded "
        "into the Hugging Face cache, or use the course's offline model with model='offline' "
        "(or SAE_COURSE_MODEL=offline)."
    )


def _fingerprint(folder: Path) -> str:
    """A short hash of a model folder's config and weights (changes when the model does)."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        path = folder / name
        if path.exists():
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def _finish(bridge: Any, model_id: str) -> Any:
    """Compatibility mode, eval mode, no grads, and the id the activation cache keys on."""
    bridge.enable_compatibility_mode()
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    bridge.sae_course_model_id = model_id
    return bridge


def _boot(source: str, device: torch.device | str, **kwargs: Any) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(source, device=str(device), **kwargs)


def load_offline(device: torch.device | str = "cpu") -> Any:
    """The StoryWorld model from its package folder, through the same path as GPT-2."""
    folder = offline_model_dir()
    if not (folder / "config.json").exists():
        raise ModelUnavailable(
            f"The offline model is missing: no config.json in {folder}. Fix: reinstall the "
            "course package (the model ships with it), or train it with the project's "
            "StoryWorld training script."
        )
    return _finish(_boot(str(folder), device), f"offline:{_fingerprint(folder)}")


def _boot_gpt2(device: torch.device | str) -> Any:
    try:
        bridge = _boot(GPT2_NAME, device)
    except Exception as err:  # network and hub errors come in many types; all mean "not here"
        raise ModelUnavailable(
            f"Loading GPT-2 failed ({type(err).__name__}: {err}). {_gpt2_fix()}"
        ) from err
    return _finish(bridge, GPT2_NAME)


def load_gpt2(device: torch.device | str = "cpu") -> Any:
    """GPT-2 small from the hub or the local cache; a clear error when neither works."""
    ok, why = gpt2_status()
    if not ok:
        raise ModelUnavailable(f"GPT-2 was requested but cannot be loaded: {why}. {_gpt2_fix()}")
    return _boot_gpt2(device)


def load_model(name: str | None = None, device: torch.device | str | None = None) -> Any:
    """The model for `name` ("auto", "gpt2" or "offline"; default: the `model` setting).

    Only the settings not given are read from the environment (SAE_COURSE_MODEL,
    SAE_COURSE_DEVICE), so a bad variable matters only when it is used.

    Returns a `TransformerBridge` in compatibility mode and eval mode, with gradients off.
    "auto" loads GPT-2 when it is cached or the hub is reachable, otherwise the offline
    model, and prints which one it chose and why.
    """
    name = _choice("model", name or os.environ.get("SAE_COURSE_MODEL") or "auto", MODELS,
                   "SAE_COURSE_MODEL")
    device = device if device is not None else pick_device(os.environ.get("SAE_COURSE_DEVICE"))
    if name == OFFLINE_NAME:
        return load_offline(device)
    if name == GPT2_NAME:
        return load_gpt2(device)
    ok, why = gpt2_status()
    if ok:
        try:
            return _boot_gpt2(device)  # gpt2_status is checked: no second hub probe
        except ModelUnavailable as err:
            why = str(err)
    message = (
        f"model='auto': GPT-2 is not available ({why}), so the course's offline StoryWorld "
        "model is used instead. Set SAE_COURSE_MODEL=gpt2 once you are online to use GPT-2."
    )
    print(message)
    return load_offline(device)


def model_name_of(model: Any) -> str:
    """"gpt2", "offline" or "random" for a model loaded here (what data source it wants)."""
    model_id = getattr(model, "sae_course_model_id", "")
    if model_id == GPT2_NAME:
        return GPT2_NAME
    if model_id.startswith("offline"):
        return OFFLINE_NAME
    return "random"


def _offline_tokenizer() -> Any:
    from transformers import AutoTokenizer

    folder = offline_model_dir()
    if not (folder / "config.json").exists():
        raise ModelUnavailable(
            f"random_gpt2_small borrows the offline model's tokenizer, but {folder} is missing. "
            "Fix: reinstall the course package."
        )
    return AutoTokenizer.from_pretrained(str(folder))


def random_gpt2_small(seed: int = 0, device: torch.device | str = "cpu") -> Any:
    """A random-weight model of GPT-2 small's exact shape, built with no download.

    12 layers, d_model 768, 12 heads, vocabulary 50257, context 1024, wrapped in the same
    `TransformerBridge` (compatibility mode) as the real models. It borrows the offline
    model's tokenizer (its token ids all fit in GPT-2's vocabulary).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
        bos_token_id=50256, eos_token_id=50256,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf_model = GPT2LMHeadModel(config).eval()
    tokenizer = _offline_tokenizer()
    bridge = _boot(GPT2_NAME, device, hf_model=hf_model.to(device), tokenizer=tokenizer)
    return _finish(bridge, f"random-gpt2-small:{seed}")
