"""Pretrained SAEs: the shipped StoryWorld suite and GPT-2's gpt2-small-res-jb (faked cache)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from sae_course import pretrained


def _fake_res_jb_cache(root, layer: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Write a gpt2-small-res-jb SAE into a Hugging Face cache layout under `root`."""
    repo = root / ("models--" + pretrained.GPT2_REPO.replace("/", "--"))
    folder = repo / "snapshots" / "abc123" / f"blocks.{layer}.hook_resid_pre"
    folder.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    g = torch.Generator().manual_seed(seed)
    d, n = pretrained.GPT2_D_IN, pretrained.GPT2_D_SAE
    shapes = {"W_enc": (d, n), "W_dec": (n, d), "b_enc": (n,), "b_dec": (d,)}
    weights = {k: torch.randn(s, generator=g).half() for k, s in shapes.items()}
    save_file(weights, str(folder / "sae_weights.safetensors"))
    cfg = {"model_name": "gpt2-small", "hook_point": f"blocks.{layer}.hook_resid_pre",
           "hook_point_layer": layer, "d_in": d, "d_sae": n, "expansion_factor": 32,
           "context_size": 128, "dataset_path": "Skylion007/openwebtext",
           "dtype": "torch.float32", "device": "cuda", "l1_coefficient": 8e-05}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return weights


def test_gpt2_res_jb_loads_from_the_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    weights = _fake_res_jb_cache(tmp_path, 8)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for sae_id in ("blocks.8.hook_resid_pre", 8):
        sae = pretrained.load_pretrained("gpt2-small-res-jb", sae_id)
        assert not sae.training and sae.W_enc.dtype == torch.float32
        assert sae.cfg.extra["hook_name"] == "blocks.8.hook_resid_pre"
        assert sae.cfg.extra["model_name"] == "gpt2"
        torch.testing.assert_close(sae.W_dec, weights["W_dec"].float())
        x = torch.randn(3, 768)
        expected = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
        torch.testing.assert_close(sae.encode(x), expected)
    # A layer that is not in the cache: one error naming the offline alternative.
    with pytest.raises(RuntimeError, match="storyworld-res"):
        pretrained.load_pretrained("gpt2-small-res-jb", 3)


def test_bad_requests_are_named():
    with pytest.raises(ValueError, match="gpt2-small-res-jb"):
        pretrained.load_pretrained("gpt2-res", 0)
    with pytest.raises(ValueError, match="blocks.0.hook_resid_pre"):
        pretrained.load_pretrained("gpt2-small-res-jb", "blocks.8.hook_mlp_out")
    with pytest.raises(ValueError, match="choose one of"):
        pretrained.load_pretrained("storyworld-res", "no/such-sae")


def test_listing():
    rows = pretrained.list_pretrained()
    gpt2 = [r for r in rows if r.release == "gpt2-small-res-jb"]
    assert [r.hook_name for r in gpt2] == [f"blocks.{i}.hook_resid_pre" for i in range(12)]
    assert all(r.role == "gpt2" and r.k is None for r in gpt2)
    suite = pretrained.list_pretrained("storyworld-res")
    assert suite and all(r.model_name == "offline" for r in suite)
    # role and k come from suite.json, as the suite script wrote them (not from the sae_id).
    index = {e["sae_id"]: e for e in pretrained._suite_index()["entries"]}
    assert {r.sae_id: (r.role, r.k) for r in suite} == {
        i: (e["role"], e["k"]) for i, e in index.items()}
    roles = {"main", "seed", "layer", "width", "k", "relu", "matryoshka"}
    assert {r.role for r in suite} <= roles
    assert [r.role for r in suite].count("main") == 1
    for r in suite:
        if r.architecture in ("topk", "batchtopk", "matryoshka"):
            assert isinstance(r.k, int) and r.k > 0, r
        else:
            assert r.k is None, r
    main = next(r for r in suite if r.role == "main")
    assert (main.hook_name, main.architecture, main.d_sae, main.k) == (
        "blocks.2.hook_resid_pre", "topk", 1536, 16)


def test_listing_reads_role_and_k_from_the_index(tmp_path, monkeypatch):
    """A suite entry's role and k are the index's, whatever its sae_id says."""
    entry = {"sae_id": "blocks.1.hook_resid_pre/custom-name", "role": "width",
             "hook_name": "blocks.1.hook_resid_pre", "architecture": "topk", "d_sae": 64,
             "k": 7, "l0": 7.0}
    relu = {**entry, "sae_id": "blocks.1.hook_resid_pre/other", "role": "relu",
            "architecture": "relu", "k": None}
    (tmp_path / "suite.json").write_text(json.dumps({"entries": [entry, relu]}))
    monkeypatch.setattr(pretrained, "SUITE_DIR", tmp_path)
    rows = pretrained.list_pretrained("storyworld-res")
    assert [(r.role, r.k) for r in rows] == [("width", 7), ("relu", None)]
    assert rows[0].metrics == {"l0": 7.0}
