"""SAE files: SAELens 6's layout both ways, metadata in cfg.extra, eval mode on load, checks
before any allocation, and a save that is atomic as a whole (kill test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sae_course.sae import SAE, SAEConfig

# cfg.json as SAELens 6 writes it (SAE.save_model / TrainingSAE.save_inference_model: the
# inference config's fields, "architecture", and the metadata block the training runner fills)
SAELENS_METADATA = {
    "sae_lens_version": "6.18.0", "sae_lens_training_version": "6.18.0",
    "dataset_path": "Skylion007/openwebtext", "hook_name": "blocks.3.hook_resid_pre",
    "model_name": "gpt2", "model_class_name": "HookedTransformer", "hook_head_index": None,
    "context_size": 128, "seqpos_slice": [None],
    "model_from_pretrained_kwargs": {"center_writing_weights": False}, "prepend_bos": True,
    "exclude_special_tokens": False, "sequence_separator_token": "bos",
    "disable_concat_sequences": False,
}
SAELENS_COMMON = {"dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
                  "normalize_activations": "none", "reshape_activations": "none"}
D_IN, D_SAE = 6, 20


def saelens_cfg(architecture: str, **kw) -> dict:
    cfg = {"d_in": D_IN, "d_sae": D_SAE, **SAELENS_COMMON, "metadata": dict(SAELENS_METADATA),
           "architecture": architecture}
    if architecture == "topk":
        cfg.update(k=4, rescale_acts_by_decoder_norm=False)
    cfg.update(kw)
    return cfg


def saelens_weights(architecture: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = {"W_enc": torch.randn(D_IN, D_SAE, generator=g),
         "W_dec": torch.randn(D_SAE, D_IN, generator=g) * 2,
         "b_enc": torch.randn(D_SAE, generator=g) * 0.1, "b_dec": torch.randn(D_IN, generator=g)}
    if architecture == "gated":  # SAELens 6's GatedSAE: no b_enc; a gate and a magnitude bias
        del w["b_enc"]
        w.update(b_gate=torch.randn(D_SAE, generator=g) * 0.1,
                 r_mag=torch.randn(D_SAE, generator=g) * 0.2,
                 b_mag=torch.randn(D_SAE, generator=g) * 0.1)
    if architecture == "jumprelu":
        w["threshold"] = torch.rand(D_SAE, generator=g) * 0.5
    return w


def write_folder(folder: Path, cfg: dict, weights: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(weights, str(folder / "sae_weights.safetensors"))
    return folder


def saelens_encode_decode(cfg: dict, w: dict[str, torch.Tensor], x: torch.Tensor):
    """SAELens 6's inference forward (StandardSAE, TopKSAE, JumpReLUSAE, GatedSAE), from its
    source."""
    sae_in = x - w["b_dec"] * cfg["apply_b_dec_to_input"]
    if cfg["architecture"] == "gated":
        active = (sae_in @ w["W_enc"] + w["b_gate"] > 0).to(x.dtype)
        magnitudes = (sae_in @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"]).relu()
        acts = active * magnitudes
        return acts, acts @ w["W_dec"] + w["b_dec"]
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    norms = w["W_dec"].norm(dim=-1)
    if cfg["architecture"] == "topk":
        if cfg["rescale_acts_by_decoder_norm"]:
            pre = pre * norms
        vals, idx = pre.topk(cfg["k"], dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
    elif cfg["architecture"] == "jumprelu":
        acts = pre.relu() * (pre > w["threshold"])
    else:
        acts = pre.relu()
    latents = acts
    if cfg["architecture"] == "topk" and cfg["rescale_acts_by_decoder_norm"]:
        acts = acts / norms
    return latents, acts @ w["W_dec"] + w["b_dec"]


@pytest.mark.parametrize(("architecture", "rescale"), [
    ("standard", False), ("topk", False), ("topk", True), ("jumprelu", False), ("gated", False)])
def test_reads_saelens_6_files_exactly(tmp_path, architecture, rescale):
    cfg = saelens_cfg(architecture)
    if rescale:
        cfg["rescale_acts_by_decoder_norm"] = True
    w = saelens_weights(architecture)
    sae = SAE.load(write_folder(tmp_path / "f", cfg, w))
    assert not sae.training
    assert sae.cfg.extra["hook_name"] == "blocks.3.hook_resid_pre"
    assert sae.cfg.extra["model_name"] == "gpt2"
    assert sae.cfg.extra["context_size"] == 128 and sae.cfg.extra["prepend_bos"] is True
    assert "hook_head_index" not in sae.cfg.extra  # null values are left out
    x = torch.randn(32, D_IN)
    latents, x_hat = saelens_encode_decode(cfg, w, x)
    torch.testing.assert_close(sae.encode(x), latents)
    torch.testing.assert_close(sae(x).x_hat, x_hat)


def test_reads_pre_6_files_with_hook_point(tmp_path):
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "torch.float32", "device": "mps",
           "model_name": "gpt2-small", "hook_point": "blocks.8.hook_resid_pre",
           "hook_point_layer": 8, "context_size": 128, "lr": 4e-4, "l1_coefficient": 8e-5,
           "normalize_activations": "none", "prepend_bos": True,
           "neuronpedia_id": "gpt2-small/8-res-jb", "finetuning_scaling_factor": False}
    sae = SAE.load(write_folder(tmp_path / "f", cfg, saelens_weights("standard")))
    assert sae.cfg.architecture == "relu"
    assert sae.cfg.extra == {"model_name": "gpt2-small", "hook_name": "blocks.8.hook_resid_pre",
                             "hook_layer": 8, "context_size": 128, "prepend_bos": True,
                             "neuronpedia_id": "gpt2-small/8-res-jb"}
    old_topk = {**cfg, "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 3}}
    sae = SAE.load(write_folder(tmp_path / "g", old_topk, saelens_weights("standard")))
    assert (sae.cfg.architecture, sae.cfg.k) == ("topk", 3)


ARCHS = {"relu": {}, "topk": {"k": 4}, "batchtopk": {"k": 4},
         "jumprelu": {"sparsity_coefficient": 0.01}, "gated": {"sparsity_coefficient": 0.5}}


@pytest.mark.parametrize("name", ARCHS)
def test_what_we_write_is_saelens_6s_layout(tmp_path, name):
    """Read our file the way SAELens 6 does (a 6.x version in metadata: no pre-6 conversion;
    the config class's fields; the state dict loaded strictly) and run its forward."""
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=name, **ARCHS[name],
                        extra={"hook_name": "blocks.1.hook_resid_pre", "model_name": "offline",
                               "context_size": 64}), seed=3)
    with torch.no_grad():
        for bias in ("b_gate", "r_mag", "b_mag") if name == "gated" else ("b_enc",):
            getattr(sae, bias).normal_(0, 0.1)
        sae.b_dec.normal_()
    if name == "batchtopk":
        sae(torch.randn(64, D_IN))  # learn its threshold
    sae.eval()
    sae.save(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    w = load_file(str(tmp_path / "s" / "sae_weights.safetensors"))
    major = int(cfg["metadata"]["sae_lens_version"].split(".")[0])
    assert major >= 6
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_pre"
    assert cfg["metadata"]["model_name"] == "offline"
    fields = {"d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input",
              "normalize_activations", "reshape_activations", "metadata", "architecture"}
    if cfg["architecture"] == "topk":
        fields |= {"k", "rescale_acts_by_decoder_norm"}
    assert fields <= set(cfg) and cfg["dtype"] in ("float32", "float64", "float16", "bfloat16")
    state_keys = {"standard": {"W_enc", "W_dec", "b_enc", "b_dec"},
                  "topk": {"W_enc", "W_dec", "b_enc", "b_dec"},
                  "jumprelu": {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"},
                  "gated": {"W_enc", "W_dec", "b_gate", "r_mag", "b_mag", "b_dec"}}
    assert set(w) == state_keys[cfg["architecture"]]
    x = torch.randn(16, D_IN)
    latents, x_hat = saelens_encode_decode(cfg, w, x)
    torch.testing.assert_close(sae.encode(x), latents)
    torch.testing.assert_close(sae(x).x_hat, x_hat)
    loaded = SAE.load(tmp_path / "s")
    assert loaded.cfg == sae.cfg and not loaded.training


def test_loaded_batchtopk_keeps_its_threshold(tmp_path):
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="batchtopk", k=3), seed=0)
    sae(torch.randn(64, D_IN))
    sae.save(tmp_path / "s")
    loaded = SAE.load(tmp_path / "s")
    before = loaded.threshold.clone()
    loaded(torch.randn(8, D_IN))  # eval mode: a fixed threshold, not batch top-k
    assert torch.equal(loaded.threshold, before)
    torch.testing.assert_close(loaded.threshold, sae.threshold)


def test_save_replaces_the_folder_and_leaves_nothing_beside_it(tmp_path):
    a = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, extra={"tag": 1}), seed=0)
    b = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, extra={"tag": 2}), seed=1)
    a.save(tmp_path / "s")
    b.save(tmp_path / "s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["cfg.json",
                                                                  "sae_weights.safetensors"]
    loaded = SAE.load(tmp_path / "s")
    assert loaded.cfg.extra == {"tag": 2}
    torch.testing.assert_close(loaded.W_enc, b.W_enc)


def _peak_rss_mb(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return float(out.strip().splitlines()[-1])


def test_a_crafted_cfg_claiming_a_huge_sae_costs_no_memory(tmp_path):
    folder = write_folder(tmp_path / "f", saelens_cfg("standard"), saelens_weights("standard"))
    cfg = saelens_cfg("standard", d_in=4096, d_sae=4096 * 64)  # 1.07e9 weights, 4 GB each
    (folder / "cfg.json").write_text(json.dumps(cfg))
    probe = (
        "import resource, torch\nfrom sae_course.sae import SAE, SAEFileError\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"try:\n    SAE.load({str(folder)!r})\nexcept SAEFileError as e:\n    print(e)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)\n"
    )
    extra_mb = _peak_rss_mb(probe)
    print("peak RSS above the baseline:", extra_mb, "MB")
    assert extra_mb < 50


def test_kill_while_saving_never_mixes_two_saes():
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from benchmarks.kill_save import run

    counts = run(kills=8, seed=1)
    assert counts == {"kills": 8, "mixed": 0, "failed_loads": 0,
                      "stale_left": counts["stale_left"]}
