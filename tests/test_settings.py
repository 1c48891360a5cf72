"""Runtime settings: arguments beat environment variables beat defaults; bad values explain."""

import pytest
import torch

from sae_course.settings import get_settings, pick_device, seed_everything, stream_generator


def test_defaults_on_a_cpu_machine(monkeypatch):
    for var in ("SAE_COURSE_DEVICE", "SAE_COURSE_BUDGET", "SAE_COURSE_SEED", "SAE_COURSE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    s = get_settings()
    assert s.device == pick_device(None)
    assert s.budget == ("gpu" if s.device.type == "cuda" else "laptop")
    assert (s.seed, s.model) == (0, "auto")


def test_environment_then_arguments(monkeypatch):
    monkeypatch.setenv("SAE_COURSE_BUDGET", "gpu")
    monkeypatch.setenv("SAE_COURSE_SEED", "7")
    monkeypatch.setenv("SAE_COURSE_MODEL", "offline")
    s = get_settings()
    assert (s.budget, s.seed, s.model) == ("gpu", 7, "offline")
    s = get_settings(budget="ci", seed=3, model="gpt2", device="cpu")
    assert (s.budget, s.seed, s.model, s.device.type) == ("ci", 3, "gpt2", "cpu")


def test_scale_picks_by_budget():
    assert get_settings(budget="ci").scale(ci=1, laptop=2, gpu=3) == 1
    assert get_settings(budget="laptop").scale(ci=1, laptop=2, gpu=3) == 2
    assert get_settings(budget="gpu").scale(ci=1, laptop=2, gpu=3) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": "huge"}, "choose one of ci, laptop, gpu"),
        ({"model": "gpt5"}, "choose one of auto, gpt2, offline"),
        ({"device": "tpu"}, "Unknown device 'tpu'"),
    ],
)
def test_bad_values_say_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        get_settings(**kwargs)


def test_bad_seed_in_environment(monkeypatch):
    monkeypatch.setenv("SAE_COURSE_SEED", "abc")
    with pytest.raises(ValueError, match="SAE_COURSE_SEED"):
        get_settings()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_requested_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")


def test_seed_everything_repeats():
    a = torch.rand(3, generator=seed_everything(5)), torch.rand(3)
    b = torch.rand(3, generator=seed_everything(5)), torch.rand(3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_stream_generator_repeats_and_keeps_streams_apart():
    """Same (stream, seed): same numbers; another stream, or the plain seed: other numbers."""
    def draw(g: torch.Generator) -> torch.Tensor:
        return torch.randn(8, generator=g)

    assert torch.equal(draw(stream_generator("a", 3)), draw(stream_generator("a", 3)))
    assert not torch.equal(draw(stream_generator("a", 3)), draw(stream_generator("b", 3)))
    assert not torch.equal(draw(stream_generator("a", 3)), draw(torch.Generator().manual_seed(3)))
    torch.manual_seed(3)
    from_global = draw(stream_generator("a"))
    torch.manual_seed(3)
    assert torch.equal(draw(stream_generator("a")), from_global)
    torch.manual_seed(3)
    assert not torch.equal(from_global, torch.randn(8))


def test_a_seed_too_large_for_torch_is_refused(monkeypatch):
    monkeypatch.setenv("SAE_COURSE_SEED", str(2**70))
    with pytest.raises(ValueError, match=r"0..2\*\*63-1.*SAE_COURSE_SEED.*Fix"):
        get_settings()
