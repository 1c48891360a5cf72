"""Bad inputs across the public API: each raises ONE error whose message names the problem
and the fix, before any work is lost or any file is overwritten.

Each case is (id, call, error type, pattern); the call gets a scratch folder and the pattern
must match the message (problem ... fix). `benchmarks/bad_inputs.py` reports how many.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from sae_course.sae import SAE, SAEConfig, SAEFileError

D_IN, D_SAE = 4, 8


def _weights(**change: Any) -> dict[str, torch.Tensor]:
    w = {"W_enc": torch.randn(D_IN, D_SAE), "W_dec": torch.randn(D_SAE, D_IN),
         "b_enc": torch.zeros(D_SAE), "b_dec": torch.zeros(D_IN)}
    w.update(change)
    return {k: v for k, v in w.items() if v is not None}


def _cfg(**change: Any) -> dict[str, Any]:
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32",
           "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
           "reshape_activations": "none",
           "metadata": {"sae_lens_version": "6.18.0", "hook_name": "blocks.0.hook_resid_pre",
                        "model_name": "gpt2"}}
    cfg.update(change)
    return cfg


def _load(cfg: dict[str, Any] | str, weights: dict[str, torch.Tensor] | None = None):
    """A call that writes an SAE folder from `cfg` and `weights`, then loads it."""

    def call(tmp: Path) -> Any:
        folder = tmp / "sae"
        folder.mkdir()
        text = cfg if isinstance(cfg, str) else json.dumps(cfg)
        (folder / "cfg.json").write_text(text)
        save_file(weights if weights is not None else _weights(),
                  str(folder / "sae_weights.safetensors"))
        return SAE.load(folder)

    return call


def _save_into(prepare: Callable[[Path], Path], sae: Callable[[], SAE]):
    """A call that saves `sae()` into the path `prepare(tmp)` returns."""
    return lambda tmp: sae().save(prepare(tmp))


def _sae(**cfg: Any) -> SAE:
    return SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, **cfg), seed=0)


def _nan_sae() -> SAE:
    sae = _sae()
    with torch.no_grad():
        sae.W_dec[0, 0] = float("nan")
    return sae


def _file(tmp: Path) -> Path:
    (tmp / "a_file").write_text("x")
    return tmp / "a_file"


def _crowded(tmp: Path) -> Path:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("keep me")
    return tmp / "mine"


Case = tuple[str, Callable[[Path], Any], type[Exception], str]

SAE_FILE_CASES: list[Case] = [
    ("topk without k", _load(_cfg(architecture="topk")), SAEFileError, r"'k' is missing.*Fix"),
    ("misspelt key", _load({**_cfg(), "apply_b_dec_to_inputs": True}), SAEFileError,
     r"unknown key 'apply_b_dec_to_inputs'.*did you mean 'apply_b_dec_to_input'.*Fix"),
    ("unknown key", _load({**_cfg(), "flux_capacitor": 3}), SAEFileError,
     r"unknown key 'flux_capacitor'.*Fix: correct or remove"),
    ("unknown key in sae_course block",
     _load({**_cfg(), "sae_course": {"d_in": D_IN, "d_sae": D_SAE, "wobble": 1}}),
     SAEFileError, r"unknown key 'sae_course.wobble'.*Fix"),
    ("layer_norm", _load(_cfg(normalize_activations="layer_norm")), SAEFileError,
     r"'normalize_activations' is 'layer_norm'.*Fix"),
    ("constant_norm_rescale", _load(_cfg(normalize_activations="constant_norm_rescale")),
     SAEFileError, r"'normalize_activations' is 'constant_norm_rescale'.*Fix"),
    ("rescale on a standard SAE", _load(_cfg(rescale_acts_by_decoder_norm=True)),
     SAEFileError, r"'rescale_acts_by_decoder_norm' is set for architecture 'standard'.*Fix"),
    ("hook_z reshaping", _load(_cfg(reshape_activations="hook_z")), SAEFileError,
     r"'reshape_activations' is 'hook_z'.*Fix"),
    ("finetuning scaling factor", _load(_cfg(finetuning_scaling_factor=True)), SAEFileError,
     r"'finetuning_scaling_factor' is set.*Fix"),
    ("gated architecture", _load(_cfg(architecture="gated")), SAEFileError,
     r"'architecture' is 'gated'.*Fix"),
    ("integer dtype in cfg.json", _load(_cfg(dtype="int8")), SAEFileError,
     r"'dtype' is 'int8'.*Fix"),
    ("hook_name not a string", _load(_cfg(metadata={"hook_name": 3})), SAEFileError,
     r"'hook_name' is 3, not a string.*Fix"),
    ("k larger than d_sae", _load(_cfg(architecture="topk", k=99)), SAEFileError,
     r"'k' is 99.*Fix"),
    ("d_sae missing", _load({k: v for k, v in _cfg().items() if k != "d_sae"}), SAEFileError,
     r"'d_sae' is None.*Fix"),
    ("cfg.json not JSON", _load("{not json"), SAEFileError, r"not valid JSON.*Fix"),
    ("cfg.json a list", _load("[1, 2]"), SAEFileError, r"JSON list, not an object"),
    ("missing tensor", _load(_cfg(), _weights(b_enc=None)), SAEFileError,
     r"sae_weights.safetensors has no tensor 'b_enc'.*Fix"),
    ("integer tensor", _load(_cfg(), _weights(W_dec=torch.ones(D_SAE, D_IN, dtype=torch.int32))),
     SAEFileError, r"sae_weights.safetensors: tensor 'W_dec' has dtype I32.*Fix"),
    ("extra tensor", _load(_cfg(), _weights(scale=torch.ones(3))), SAEFileError,
     r"has tensor 'scale'.*Fix"),
    ("shape mismatch", _load(_cfg(d_sae=2 * D_SAE)), SAEFileError,
     r"tensor 'W_enc' has shape \(4, 8\), but cfg.json.*implies \(4, 16\).*Fix"),
    ("dtype mismatch", _load(_cfg(dtype="float16")), SAEFileError,
     r"tensors are torch.float32 but cfg.json says dtype torch.float16.*Fix"),
    ("NaN in the weights", _load(_cfg(), _weights(b_dec=torch.full((D_IN,), float("nan")))),
     SAEFileError, r"tensor 'b_dec' holds NaN or Inf.*Fix"),
    ("negative jumprelu threshold",
     _load(_cfg(architecture="jumprelu"), _weights(threshold=-torch.ones(D_SAE))),
     SAEFileError, r"'threshold' has negative values.*Fix"),
    ("save onto a file", _save_into(_file, _sae), SAEFileError, r"it is a file. Fix"),
    ("save into a folder with other files", _save_into(_crowded, _sae), SAEFileError,
     r"holds other files \(notes.txt\).*Fix"),
    ("save a diverged SAE", _save_into(lambda t: t / "s", _nan_sae), SAEFileError,
     r"W_dec holds NaN or Inf.*Fix"),
    ("save an extra that is not JSON", _save_into(lambda t: t / "s", lambda: _sae(
        extra={"when": object()})), SAEFileError, r"cfg.extra cannot be written.*Fix"),
    ("load a missing folder", lambda tmp: SAE.load(tmp / "nowhere"), FileNotFoundError,
     r"cfg.json does not exist: an SAE folder needs"),
]

CASES: list[Case] = SAE_FILE_CASES


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize(("name", "call", "error", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_clear_error(tmp_path, name, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(tmp_path)


def test_refused_saves_leave_the_files_as_they_were(tmp_path):
    crowded = _crowded(tmp_path)
    before = _snapshot(tmp_path)
    for bad in (_sae, _nan_sae):
        with pytest.raises(SAEFileError):
            bad().save(crowded)
    _sae().save(tmp_path / "s")
    saved = _snapshot(tmp_path)
    with pytest.raises(SAEFileError):
        _nan_sae().save(tmp_path / "s")
    assert _snapshot(tmp_path) == saved and {k: saved[k] for k in before} == before
