"""The activation store: hook names, the early stop, the shuffle buffer, normalisation, cache."""

from __future__ import annotations

import pytest
import torch

from sae_course import activations as A
from sae_course import text
from sae_course.models import load_model


@pytest.fixture(scope="module")
def model():
    return load_model("offline", device="cpu")


@pytest.fixture(scope="module")
def contexts(model):
    return text.contexts_for_model(model, 24, context_len=24, seed=0)


def store(model, contexts, hook="blocks.1.hook_resid_pre", **kwargs):
    options = dict(batch_size=32, buffer_mb=128 * 4 * model.cfg.d_model / 2**20,
                   model_batch_size=4, progress=False, seed=0)
    options.update(kwargs)
    return A.ActivationStore(model, contexts, hook, **options)


def test_wrong_hook_name_lists_valid_ones(model, contexts):
    with pytest.raises(ValueError) as info:
        A.harvest(model, contexts[:1], "blocks.1.resid_pre")
    message = str(info.value)
    assert "Unknown hook name 'blocks.1.resid_pre'" in message
    assert "blocks.1.hook_resid_pre" in message  # the suggestion
    assert "blocks.{L}.hook_resid_pre" in message and "hook_embed" in message
    with pytest.raises(ValueError, match="Valid hook names"):
        store(model, contexts, hook="blocks.99.hook_resid_pre")
    with pytest.raises(ValueError, match="one vector per token"):
        store(model, contexts, hook="blocks.0.attn.hook_pattern")


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre",
                                  "blocks.1.attn.hook_pattern", "ln_final.hook_normalized"])
def test_stop_early_gives_the_full_runs_activations(model, contexts, hook):
    tokens = contexts[:3]
    stopped = A.harvest(model, tokens, hook, stop_early=True)
    full = A.harvest(model, tokens, hook, stop_early=False)
    _, cache = model.run_with_cache(tokens, names_filter=hook)
    assert torch.equal(stopped, full)
    assert torch.equal(stopped, cache[hook])


def test_stop_early_really_stops(model, contexts):
    fired = []
    later = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    with model.hooks(fwd_hooks=[(later, lambda acts, hook: fired.append(1))]):
        A.harvest(model, contexts[:2], "blocks.0.hook_resid_pre")
        assert fired == []
        A.harvest(model, contexts[:2], "blocks.0.hook_resid_pre", stop_early=False)
        assert fired == [1]


def test_flatten_drops_bos_positions():
    acts = torch.arange(2 * 3 * 1.0).reshape(2, 3, 1)
    assert A.flatten_activations(acts, exclude_bos=True).flatten().tolist() == [1, 2, 4, 5]
    assert A.flatten_activations(acts, exclude_bos=False).shape == (6, 1)


def test_store_serves_every_token_once_shuffled_and_deterministically(model, contexts):
    s1, s2, s3 = store(model, contexts), store(model, contexts), store(model, contexts, seed=1)
    b1, b2, b3 = list(s1), list(s2), list(s3)
    assert all(b.shape == (32, model.cfg.d_model) for b in b1)
    assert all(torch.equal(x, y) for x, y in zip(b1, b2, strict=True))
    assert not torch.equal(b1[0], b3[0])
    everything = torch.cat([  # harvested in the store's forward batches of 4: same numerics
        A.flatten_activations(A.harvest(model, contexts[i : i + 4], "blocks.1.hook_resid_pre"))
        for i in range(0, len(contexts), 4)
    ])
    served = torch.cat(b1)
    assert len(served) == len(everything) // 32 * 32  # only the incomplete last batch is dropped
    assert not torch.equal(served, everything[: len(served)])  # shuffled
    # every served row is one of the harvested rows
    dists = torch.cdist(served, everything, compute_mode="donot_use_mm_for_euclid_dist")
    assert dists.min(dim=1).values.max() == 0


def test_store_memory_is_bounded_whatever_the_budget(model):
    def endless(n_batches):  # a token budget far larger than the buffer
        for i in range(n_batches):
            yield text.pack_contexts([[5 + (i * 7 + j) % 50 for j in range(40)]] * 4, 16, 0)

    s = A.ActivationStore(model, endless(60), "blocks.0.hook_resid_pre", batch_size=16,
                          buffer_mb=64 * 4 * model.cfg.d_model / 2**20, model_batch_size=2,
                          progress=False)
    n = sum(len(b) for b in s)
    chunk = 2 * 15  # one forward batch of activations
    assert n > 10 * s.buffer_tokens
    assert s.peak_buffer_tokens <= s.buffer_tokens + chunk


def test_buffer_smaller_than_two_batches_is_refused(model, contexts):
    with pytest.raises(ValueError, match="fewer than two batches"):
        store(model, contexts, batch_size=4096, buffer_mb=1.0)


def test_normalisation_reaches_sqrt_d_and_is_undone_exactly(model, contexts):
    s = store(model, contexts, normalize=True, n_norm_tokens=10_000)
    d = model.cfg.d_model
    everything = A.flatten_activations(A.harvest(model, contexts, "blocks.1.hook_resid_pre"))
    assert torch.allclose(s.scale_factor, A.norm_scale_factor(everything))
    served = torch.cat(list(s))
    assert abs(served.norm(dim=-1).mean().item() - d**0.5) < 0.05 * d**0.5
    x = everything[:50]
    assert torch.allclose(s.unnormalize(s.normalize(x)), x, rtol=1e-6, atol=1e-6)
    assert torch.equal(store(model, contexts).normalize(x), x)  # off: identity


def test_residual_norm_profile_measures_bos_against_the_rest(model, contexts):
    resid = A.residual_stream(model, contexts[:3])
    profile = A.residual_norm_profile(resid)
    norms, ratio = profile  # a plain (norms, bos_ratio) tuple as well
    assert torch.equal(norms, A.residual_norms(resid)) and norms is profile.norms
    assert ratio.shape == (model.cfg.n_layers + 1,)
    assert torch.allclose(ratio, norms[:, 0] / norms[:, 1:].mean(1))
    sink = torch.ones(2, 3, 4, 5, dtype=torch.float64)
    sink[:, :, 0] *= 7
    sink_ratio = A.residual_norm_profile(sink).bos_ratio
    assert sink_ratio.dtype == torch.float64
    assert torch.allclose(sink_ratio, torch.full((2,), 7.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2"):
        A.residual_norm_profile(resid[:, :, :1])
    with pytest.raises(ValueError, match="n_layers"):
        A.residual_norm_profile(resid[0])


def test_estimate_norm_scale_factor_streams_the_first_batches():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 6, generator=g, dtype=torch.float64) * (i + 1)
               for i, n in enumerate([40, 3, 17, 25])]
    drawn = []

    def stream():
        for batch in batches:
            drawn.append(len(batch))
            yield batch

    c = A.estimate_norm_scale_factor(stream(), 3)
    assert drawn == [40, 3, 17]  # no batch drawn beyond the third
    assert c.shape == () and c.dtype == torch.float64
    assert torch.allclose(c, A.norm_scale_factor(torch.cat(batches[:3])))
    assert torch.allclose(A.estimate_norm_scale_factor(batches, 4),
                          A.norm_scale_factor(torch.cat(batches)))
    with pytest.raises(ValueError, match="only 4 came"):
        A.estimate_norm_scale_factor(batches, 5)
    with pytest.raises(ValueError, match="width 4, the first had 6"):
        A.estimate_norm_scale_factor([batches[0], torch.randn(2, 4)], 2)
    with pytest.raises(ValueError, match="positive integer"):
        A.estimate_norm_scale_factor(batches, 0)
    with pytest.raises(ValueError, match="no tokens"):
        A.estimate_norm_scale_factor([torch.zeros(0, 6)], 1)


def test_disk_cache_is_reused_and_invalidated_by_the_key(model, contexts, tmp_path):
    first = store(model, contexts, cache_dir=tmp_path)
    batches = list(first)
    assert first.forward_passes == len(contexts) // 4
    shards = list(first.cache_path.glob("*.safetensors"))
    assert len(shards) == first.forward_passes
    assert not list(tmp_path.rglob("*.tmp"))

    again = store(model, contexts, cache_dir=tmp_path)
    assert all(torch.equal(x, y) for x, y in zip(batches, list(again), strict=True))
    assert again.forward_passes == 0

    for changed in (dict(hook="blocks.0.hook_resid_pre"), dict(seed=1),
                    dict(contexts=contexts[:-4]), dict(exclude_bos=False)):
        options = {"contexts": contexts, **changed}
        other = store(model, options.pop("contexts"), cache_dir=tmp_path, **options)
        assert other.cache_path != first.cache_path
        list(other)
        assert other.forward_passes > 0


def test_cache_resumes_after_an_interrupted_run(model, contexts, tmp_path):
    partial = store(model, contexts, cache_dir=tmp_path)
    it = iter(partial.activation_chunks())
    next(it), next(it)
    it.close()
    resumed = store(model, contexts, cache_dir=tmp_path)
    list(resumed)
    assert resumed.forward_passes == len(contexts) // 4 - 2


def test_cache_needs_a_data_key_for_streams(model, tmp_path):
    with pytest.raises(ValueError, match="data_key"):
        A.ActivationStore(model, iter([]), "blocks.0.hook_resid_pre", cache_dir=tmp_path,
                          batch_size=8, buffer_mb=1.0, progress=False)


def test_fold_scale_into_sae_gives_raw_units():
    from sae_course.activations import fold_scale_into_sae, normalize, unnormalize
    from sae_course.sae import SAE, SAEConfig

    torch.manual_seed(0)
    x = torch.randn(64, 16) * 7.0
    for arch, k in (("topk", 4), ("relu", None)):
        sae = SAE(SAEConfig(d_in=16, d_sae=32, architecture=arch, k=k), seed=1)
        with torch.no_grad():
            sae.b_dec.normal_()
        scale = 0.37
        expected_z = sae.encode(normalize(x, scale))
        expected_x = unnormalize(sae.decode(expected_z), scale)
        fold_scale_into_sae(sae, scale)
        torch.testing.assert_close(sae.encode(x), expected_z)
        torch.testing.assert_close(sae.decode(sae.encode(x)), expected_x)
    with pytest.raises(ValueError, match="scale"):
        fold_scale_into_sae(sae, 0.0)
