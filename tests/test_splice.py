"""The splice: an SAE (or an edit of its latents) in the offline model's forward pass.

Sizes come from model.cfg, so the tests hold for any retrained offline model.
"""

from __future__ import annotations

import pytest
import torch

from sae_course.models import load_model
from sae_course.sae import SAE, SAEConfig
from sae_course.settings import cpu_threads
from sae_course.splice import Splice, bos_mask, splice_hooks, spliced


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


@pytest.fixture(scope="module")
def model():
    return load_model("offline", device="cpu")


@pytest.fixture(scope="module")
def hook(model):
    return f"blocks.{model.cfg.n_layers // 2}.hook_resid_pre"


@pytest.fixture(scope="module")
def tokens(model):
    """Two contexts of 10 tokens, each starting with BOS (random ids, BOS nowhere else)."""
    bos = model.tokenizer.bos_token_id
    ids = torch.randint(0, model.cfg.d_vocab, (2, 10), generator=torch.Generator().manual_seed(0))
    ids[ids == bos] = (bos + 1) % model.cfg.d_vocab
    ids[:, 0] = bos
    return ids


@pytest.fixture(scope="module")
def clean(model, tokens):
    return model(tokens)


def random_sae(d_in: int, d_sae: int = 64) -> SAE:
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, architecture="topk", k=8), seed=0)
    sae.requires_grad_(False)
    return sae


def identity_sae(d_in: int) -> SAE:
    """relu(x) - relu(-x) = x: a ReLU SAE with W_enc = [I, -I] reconstructs exactly."""
    sae = SAE(SAEConfig(d_in=d_in, d_sae=2 * d_in, architecture="relu"))
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    return sae


def n_hooks(model) -> int:
    return sum(len(hp.fwd_hooks) + len(hp.bwd_hooks) for hp in model.hook_points())


def run_with(model, tokens, hook_name, fn):
    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, fn)])


def test_error_mode_keeps_logits_and_gives_latents_gradients(model, hook, tokens, clean):
    sae = random_sae(model.cfg.d_model)
    with spliced(model, sae, hook, mode="error") as s:
        logits = model(tokens)
    torch.testing.assert_close(logits, clean, atol=1e-4, rtol=1e-4)
    assert s.latents.shape == (*tokens.shape, sae.cfg.d_sae) and s.latents.requires_grad
    logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None]).sum().backward()
    grad = s.latents.grad
    assert grad is not None and grad[:, 1:].abs().sum() > 0
    assert (grad[:, 0] == 0).all()  # BOS: the splice passes x through untouched
    assert s.bos[:, 0].all() and not s.bos[:, 1:].any()
    with spliced(model, sae, hook, mode="reconstruction"):
        assert (model(tokens) - clean).abs().max() > 1e-2  # the same SAE does change the output


def test_reconstruction_with_a_perfect_sae_gives_the_clean_logits(model, hook, tokens, clean):
    with spliced(model, identity_sae(model.cfg.d_model), hook) as s:
        logits = model(tokens)
    torch.testing.assert_close(logits, clean, atol=1e-4, rtol=1e-4)
    assert (s.latents != 0).any()


def test_reconstruction_is_the_sae_output_at_every_non_bos_position(model, hook, tokens):
    sae = random_sae(model.cfg.d_model)

    def manual(x, hook):
        return torch.cat([x[:, :1], sae(x[:, 1:]).x_hat], dim=1)

    expected = run_with(model, tokens, hook, manual)
    with spliced(model, sae, hook):
        torch.testing.assert_close(model(tokens), expected)


def test_zero_mode_equals_a_manual_zero_hook(model, hook, tokens, clean):
    def manual(x, hook):
        x = x.clone()
        x[:, 1:] = 0
        return x

    expected = run_with(model, tokens, hook, manual)
    logits = model.run_with_hooks(tokens, fwd_hooks=splice_hooks(model, None, hook, mode="zero"))
    torch.testing.assert_close(logits, expected)
    assert (logits - clean).abs().max() > 1e-2


def test_bos_position_is_left_untouched(model, hook, tokens):
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    sae = random_sae(model.cfg.d_model)
    _, clean_cache = model.run_with_cache(tokens, names_filter=[hook, last])
    for skip_bos in (True, False):
        with spliced(model, sae, hook, skip_bos=skip_bos):
            _, cache = model.run_with_cache(tokens, names_filter=[last])
        same = torch.equal(cache[last][:, 0], clean_cache[last][:, 0])
        assert same == skip_bos
        assert not torch.allclose(cache[last][:, 1:], clean_cache[last][:, 1:])
    no_bos = tokens[:, 1:]  # position 0 holds an ordinary token: it is spliced
    with spliced(model, sae, hook) as s:
        model(no_bos)
    assert not s.bos.any()


def test_bos_mask():
    tokens = torch.tensor([[5, 1, 5], [0, 5, 2]])
    assert bos_mask(tokens, 5).tolist() == [[True, False, False], [False, False, False]]
    positions = torch.tensor([[0, 1, 2], [1, 0, 1]])  # left-padded: BOS at position id 0
    assert bos_mask(tokens, 5, positions).tolist() == [[True, False, False],
                                                       [False, True, False]]


def test_edit_ablating_all_latents_with_error_kept_ablates_the_reconstruction(model, hook,
                                                                              tokens):
    sae = random_sae(model.cfg.d_model)

    def manual(x, hook):  # x - x_hat + decode(0): the error term plus b_dec
        out = x - sae(x).x_hat + sae.b_dec
        return torch.cat([x[:, :1], out[:, 1:]], dim=1)

    expected = run_with(model, tokens, hook, manual)
    with spliced(model, sae, hook, mode="error", edit=torch.zeros_like) as s:
        logits = model(tokens)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    assert (s.latents != 0).any()  # the recorded latents are the unedited ones


def test_edit_changes_only_what_it_edits(model, hook, tokens):
    sae = random_sae(model.cfg.d_model)
    with spliced(model, sae, hook):
        plain = model(tokens)
    with spliced(model, sae, hook, edit=lambda z: z):
        torch.testing.assert_close(model(tokens), plain)

    def clamp(z):
        z[..., 3] = 10.0  # in place: the splice hands the edit a copy
        return z

    with spliced(model, sae, hook, edit=clamp) as s:
        clamped = model(tokens)
    assert (clamped - plain).abs().max() > 1e-3 and (s.latents[..., 3] != 10.0).any()
    with spliced(model, sae, hook, edit=lambda z: None), pytest.raises(ValueError,
                                                                     match="must return"):
        model(tokens)


def test_hooks_are_removed_even_when_the_forward_raises(model, hook, tokens, clean):
    before = n_hooks(model)
    with pytest.raises(RuntimeError), spliced(model, random_sae(model.cfg.d_model), hook):
        model(tokens)
        raise RuntimeError
    assert n_hooks(model) == before
    wrong = random_sae(model.cfg.d_model + 1)
    with pytest.raises(ValueError), spliced(model, wrong, hook):
        model(tokens)  # raises inside the hook
    assert n_hooks(model) == before
    torch.testing.assert_close(model(tokens), clean)


def test_wrong_hook_name_lists_the_valid_ones(model):
    with pytest.raises(ValueError) as info:
        Splice(model, random_sae(model.cfg.d_model), "blocks.0.hook_resid_prev")
    message = str(info.value)
    assert "blocks.0.hook_resid_pre" in message and "blocks.{L}.hook_resid_pre" in message


def test_d_in_mismatch_names_both_sizes(model, hook, tokens):
    d = model.cfg.d_model
    with pytest.raises(ValueError) as info, spliced(model, random_sae(d + 3), hook):
        model(tokens)
    message = str(info.value)
    assert f"size {d}" in message and f"d_in={d + 3}" in message and hook in message


def test_bad_arguments(model, hook):
    sae = random_sae(model.cfg.d_model)
    with pytest.raises(ValueError, match="Unknown splice mode"):
        Splice(model, sae, hook, mode="ablate")
    with pytest.raises(ValueError, match="needs an SAE"):
        Splice(model, None, hook, mode="error")
    with pytest.raises(ValueError, match="has none"):
        Splice(model, sae, hook, mode="zero", edit=torch.zeros_like)


def generate(model, prompt, fwd_hooks=(), use_cache=True):
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        return model.generate(prompt, max_new_tokens=6, do_sample=False, stop_at_eos=False,
                              use_past_kv_cache=use_cache, verbose=False)


def test_generation_with_kv_cache(model, hook):
    prompt = model.to_tokens("Once upon a time")
    clean = generate(model, prompt)
    zero = generate(model, prompt, splice_hooks(model, None, hook, mode="zero"))
    assert not torch.equal(zero, clean)
    # the cached steps ([batch, 1, d], no BOS) are spliced exactly like full forward passes
    uncached = generate(model, prompt, splice_hooks(model, None, hook, mode="zero"),
                        use_cache=False)
    assert torch.equal(zero, uncached)
    sae = random_sae(model.cfg.d_model)
    kept = generate(model, prompt, splice_hooks(model, sae, hook, mode="error"))
    assert torch.equal(kept, clean)
    splice = Splice(model, sae, hook)
    generate(model, prompt, splice.fwd_hooks)
    assert splice.bos.shape == (1, 1) and not splice.bos.any()  # the last step: no BOS
    assert n_hooks(model) == 0
