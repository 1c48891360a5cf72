"""Bad inputs across the public API: each raises ONE error whose message names the problem
and the fix, before any work is lost or any file is overwritten.

Each case is (id, call, error type, pattern); the call gets a scratch folder and the pattern
must match the message (problem ... fix). `benchmarks/bad_inputs.py` reports how many.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from sae_course import activations as A
from sae_course.evaluation import evaluate_sae
from sae_course.models import load_model
from sae_course.sae import SAE, SAEConfig, SAEFileError
from sae_course.settings import get_settings
from sae_course.training import TrainConfig, train_sae

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
    ("gated cfg with a standard SAE's weights", _load(_cfg(architecture="gated")),
     SAEFileError, r"has no tensor 'b_gate'.*Fix"),
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



def _config(**kw: Any) -> Callable[[Path], Any]:
    return lambda tmp: TrainConfig(**{"n_steps": 10, **kw})


def _sae_config(**kw: Any) -> Callable[[Path], Any]:
    return lambda tmp: SAEConfig(**{"d_in": D_IN, "d_sae": D_SAE, **kw})


def _batch(step: int) -> torch.Tensor:
    return torch.randn(16, D_IN, generator=torch.Generator().manual_seed(step))


def _train(data: Any, n_steps: int = 4, checkpoint: Callable[[Path], Path] | None = None):
    def call(tmp: Path) -> Any:
        folder = checkpoint(tmp) if checkpoint is not None else None
        return train_sae(_sae(), data, TrainConfig(n_steps=n_steps, progress=False),
                         checkpoint_dir=folder)

    return call


def _with_bad(step: int, bad: Callable[[torch.Tensor], Any]) -> Callable[[int], Any]:
    return lambda s: bad(_batch(s)) if s == step else _batch(s)


def _inf(x: torch.Tensor) -> torch.Tensor:
    x[0, 0] = float("inf")
    return x


def _escaping_state(tmp: Path) -> Path:
    train_sae(_sae(), _batch, TrainConfig(n_steps=2, progress=False), checkpoint_dir=tmp / "c")
    state = json.loads((tmp / "c" / "state.json").read_text())
    state["tensors"] = "/etc/passwd"
    (tmp / "c" / "state.json").write_text(json.dumps(state))
    return tmp / "c"


TRAINING_CASES: list[Case] = [
    ("lr=inf", _config(lr=float("inf")), ValueError, r"lr must be a finite number > 0.*Fix"),
    ("lr=nan", _config(lr=float("nan")), ValueError, r"lr must be a finite number > 0.*Fix"),
    ("lr=0", _config(lr=0.0), ValueError, r"lr must be a finite number > 0.*Fix"),
    ("n_steps=0", _config(n_steps=0), ValueError, r"n_steps must be a positive integer.*Fix"),
    ("n_steps a float", _config(n_steps=2.5), ValueError, r"n_steps must be a positive integer"),
    ("beta of 1", _config(betas=(0.9, 1.0)), ValueError, r"betas must be two numbers in \[0, "
     r"1\).*Fix"),
    ("seed 2**70 in TrainConfig", _config(seed=2**70), ValueError, r"seed must be an integer "
     r"in 0..2\*\*63-1.*Fix"),
    ("resample_until above 1", _config(resample_until=2.0), ValueError,
     r"resample_until is a fraction.*Fix"),
    ("negative log_every", _config(log_every=-1), ValueError, r"log_every must be an integer "
     r">= 0.*Fix"),
    ("unknown init_b_dec", _config(init_b_dec="median"), ValueError,
     r"init_b_dec must be None, 'mean' or 'geometric_median'.*Fix"),
    ("jumprelu_bandwidth=0", _sae_config(architecture="jumprelu", jumprelu_bandwidth=0.0),
     ValueError, r"jumprelu_bandwidth must be > 0.*Fix"),
    ("k above d_sae", _sae_config(architecture="topk", k=D_SAE + 1), ValueError,
     r"k=9 is larger than d_sae=8.*use k <= 8"),
    ("unknown architecture", _sae_config(architecture="transcoder"), ValueError,
     r"Unknown architecture 'transcoder': choose one of"),
    ("d_in=0", _sae_config(d_in=0), ValueError, r"d_in must be a positive integer.*Fix"),
    ("NaN coefficient", _sae_config(sparsity_coefficient=float("nan")), ValueError,
     r"sparsity_coefficient must be a finite number >= 0"),
    ("Inf in a batch", _train(_with_bad(2, _inf)), ValueError,
     r"Input contains NaN or Inf values: check the activations"),
    ("data shorter than n_steps", _train([_batch(i) for i in range(3)], n_steps=5), ValueError,
     r"data ran out after 3 batches, but n_steps=5.*Fix"),
    ("token ids as a batch", _train(_with_bad(0, lambda x: torch.ones(16, D_IN, dtype=torch.long))),
     ValueError, r"dtype torch.int64: token ids, not activations\? Fix"),
    ("an empty batch", _train(_with_bad(1, lambda x: x[:0])), ValueError,
     r"shape \(0, 4\).*at least one token.*Fix"),
    ("a batch of the wrong width", _train(_with_bad(1, lambda x: torch.randn(16, D_IN + 1))),
     ValueError, r"last dimension 5.*d_in=4.*pass activations of shape"),
    ("a list as a batch", _train(_with_bad(0, lambda x: x.tolist())), ValueError,
     r"is a list, not a tensor. Fix"),
    ("checkpoint_dir a file", _train(_batch, checkpoint=_file), ValueError,
     r"checkpoint_dir .*a_file is a file. Fix"),
    ("state.json pointing outside", _train(_batch, checkpoint=_escaping_state), ValueError,
     r"points at '/etc/passwd', not a checkpoint file in its own folder.*Fix"),
    ("evaluate_sae on the wrong width", lambda tmp: evaluate_sae(_sae(), torch.randn(6, 8)),
     ValueError, r"last dimension 8.*d_in=4.*pass activations of shape"),
]


@functools.cache
def _model() -> Any:
    return load_model("offline", device="cpu")


def _tokens(**change: Any) -> torch.Tensor:
    t = torch.randint(1, 100, (4, 12), generator=torch.Generator().manual_seed(0))
    t[:, 0] = _model().tokenizer.bos_token_id or 0
    return t


def _store(contexts: Callable[[], Any], **kw: Any) -> Callable[[Path], Any]:
    def call(tmp: Path) -> Any:
        options = {"batch_size": 8, "buffer_mb": 1.0, "progress": False, **kw}
        store = A.ActivationStore(_model(), contexts(), "blocks.0.hook_resid_pre", **options)
        return list(store)

    return call


def _harvest(tokens: Callable[[], Any]) -> Callable[[Path], Any]:
    return lambda tmp: A.harvest(_model(), tokens(), "blocks.0.hook_resid_pre")


def _env(var: str, value: str, call: Callable[[], Any]) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        before = os.environ.get(var)
        os.environ[var] = value
        try:
            return call()
        finally:
            if before is None:
                del os.environ[var]
            else:
                os.environ[var] = before

    return run


DATA_CASES: list[Case] = [
    ("store batch_size=0", _store(_tokens, batch_size=0), ValueError,
     r"batch_size must be a positive integer, got 0. Fix"),
    ("store model_batch_size=0", _store(_tokens, model_batch_size=0), ValueError,
     r"model_batch_size must be a positive integer, got 0. Fix"),
    ("store buffer_mb=nan", _store(_tokens, buffer_mb=float("nan")), ValueError,
     r"buffer_mb must be a finite number of MB"),
    ("store buffer under two batches", _store(_tokens, batch_size=4096), ValueError,
     r"fewer than two batches.*Fix: raise buffer_mb"),
    ("store float tokens", _store(lambda: _tokens().float()), ValueError,
     r"Tokens have dtype torch.float32; token ids are integers. Fix"),
    ("store ids beyond the vocabulary", _store(lambda: _tokens() + 10**6), ValueError,
     r"Token ids run from .* outside the model's vocabulary \(0..\d+\). Fix"),
    ("store negative ids", _store(lambda: _tokens() - 10**3), ValueError,
     r"Token ids run from -.*outside the model's vocabulary.*Fix"),
    ("store contexts longer than the model's", _store(lambda: torch.ones(
        2, _model().cfg.n_ctx + 1, dtype=torch.long)), ValueError, r"Contexts of \d+ tokens "
     r"are longer than the model's context \((\d+)\). Fix: use context_len <= \1"),
    ("store 1-D tokens", _store(lambda: _tokens()[0]), ValueError,
     r"Tokens have shape \(12,\); the model wants \[n_contexts, context_len\].*Fix"),
    ("store stream of float tokens", _store(lambda: iter([_tokens().float()])), ValueError,
     r"Tokens have dtype torch.float32; token ids are integers. Fix"),
    ("store unknown hook", lambda tmp: A.ActivationStore(_model(), _tokens(), "blocks.0.resid"),
     ValueError, r"Unknown hook name 'blocks.0.resid'.*Valid hook names"),
    ("harvest float tokens", _harvest(lambda: _tokens().double()), ValueError,
     r"Tokens have dtype torch.float64.*Fix"),
    ("harvest a list", _harvest(lambda: [[1, 2, 3]]), ValueError,
     r"must be a torch tensor of token ids, got list. Fix"),
    ("SAE_COURSE_SEED=2**70", _env("SAE_COURSE_SEED", str(2**70), get_settings), ValueError,
     r"seed must be in 0..2\*\*63-1.*SAE_COURSE_SEED.*Fix"),
    ("SAE_COURSE_SEED not a number", _env("SAE_COURSE_SEED", "abc", get_settings), ValueError,
     r"seed must be an integer, got 'abc' \(check SAE_COURSE_SEED\)"),
    ("unknown device", lambda tmp: get_settings(device="quantum"), ValueError,
     r"Unknown device 'quantum': use 'auto', 'cpu'"),
    ("unknown budget", lambda tmp: get_settings(budget="huge"), ValueError,
     r"Unknown budget 'huge': choose one of ci, laptop, gpu.*SAE_COURSE_BUDGET"),
    ("unknown model", lambda tmp: load_model("gpt3", device="cpu"), ValueError,
     r"Unknown model 'gpt3': choose one of auto, gpt2, offline"),
    ("bad SAE_COURSE_DEVICE with no device given",
     _env("SAE_COURSE_DEVICE", "quantum", lambda: load_model("offline")), ValueError,
     r"Unknown device 'quantum'"),
]

CASES: list[Case] = SAE_FILE_CASES + TRAINING_CASES + DATA_CASES


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
