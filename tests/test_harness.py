"""The check harness: failures say what differs and name a recognised mistake."""

import pytest
import torch

from sae_course.checks.harness import CheckFailed, call, compare, passed, require


def test_compare_accepts_equal_tensors():
    compare(torch.ones(3), torch.ones(3), exercise="ex", what="the output")


def test_compare_reports_shapes():
    with pytest.raises(CheckFailed, match=r"shape \(2,\) but should have shape \(3,\)"):
        compare(torch.ones(2), torch.ones(3), exercise="ex", what="the output")


def test_compare_reports_where_values_differ():
    actual = torch.tensor([1.0, 5.0, 3.0])
    with pytest.raises(CheckFailed, match=r"largest difference 2 at index \(1,\)"):
        compare(actual, torch.tensor([1.0, 3.0, 3.0]), exercise="ex", what="the output")


def test_compare_names_a_known_mistake():
    expected = torch.tensor([0.0, 2.0])
    no_relu = torch.tensor([-1.0, 2.0])
    with pytest.raises(CheckFailed, match="you forgot the ReLU"):
        compare(no_relu, expected, exercise="ex", what="the output",
                mistakes={"you forgot the ReLU": no_relu})


def test_compare_rejects_non_tensors_and_nan():
    with pytest.raises(CheckFailed, match="should be a torch.Tensor"):
        compare([1.0], torch.ones(1), exercise="ex", what="the output")
    with pytest.raises(CheckFailed, match="NaN"):
        compare(torch.tensor([float("nan")]), torch.ones(1), exercise="ex", what="the output")


def test_call_passes_stub_errors_and_wraps_bugs():
    def stub():
        raise NotImplementedError("Exercise 'x' is yours to write")

    def buggy():
        return 1 / 0

    with pytest.raises(NotImplementedError, match="'x'"):
        call("x", stub)
    with pytest.raises(CheckFailed, match="x: calling your code raised ZeroDivisionError"):
        call("x", buggy)


def test_require_and_passed(capsys):
    with pytest.raises(CheckFailed, match="ex: wrong"):
        require(False, "ex", "wrong")
    passed("ex", "all good")
    assert capsys.readouterr().out == "\N{CHECK MARK} ex: all good\n"


def test_unchanged_and_same_kind():
    from sae_course.checks.harness import same_kind, unchanged

    x = torch.ones(3)
    unchanged("ex", x.clone(), x, "the input")
    with pytest.raises(CheckFailed, match="changed the input in place"):
        unchanged("ex", x.clone(), x.mul_(2), "the input")
    with pytest.raises(CheckFailed, match="in place"):
        unchanged("ex", [[1]], [[1, 0]], "the lists")
    same_kind("ex", torch.ones(2, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), "y")
    with pytest.raises(CheckFailed, match="dtype torch.float32 but should keep"):
        same_kind("ex", torch.ones(2), torch.zeros(1, dtype=torch.float64), "y")
    with pytest.raises(CheckFailed, match="should be a torch.Tensor"):
        same_kind("ex", 1.0, torch.zeros(()), "y")


def test_watch_model_removes_what_the_learner_left_and_counts_passes():
    from sae_course.checks.harness import watch_model

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    first = model[0]
    with watch_model("ex", model, first) as watch:
        model(torch.ones(1, 2))
        model(torch.ones(1, 2))
    assert watch.forward_passes == 2
    with pytest.raises(CheckFailed, match=r"left 1 hook\(s\) on the model \(at 1\)"):
        with watch_model("ex", model, first):
            model[1].register_forward_hook(lambda m, i, o: None)
    with pytest.raises(ZeroDivisionError):  # the learner's error wins; the hook still goes
        with watch_model("ex", model, first):
            model[1].register_forward_hook(lambda m, i, o: 1 / 0)
            model(torch.ones(1, 2))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    model(torch.ones(1, 2))  # nothing left to raise
    with pytest.raises(CheckFailed, match="weights in place"):
        with watch_model("ex", model):
            with torch.no_grad():
                first.weight.add_(1)


# Code that works on a GPU, and code that would put a tensor on the CPU beside GPU inputs.
_GPU_SAFE = {
    "a 0-d scalar": lambda x: x * torch.tensor(0.5),
    "an index made on the default device": lambda x: x[torch.arange(2)],
    "moved with .to(x.device)": lambda x: x + torch.randn(x.shape).to(x.device),
    "moved with .to(x)": lambda x: x + torch.tensor([1.0, 2.0, 3.0]).to(x),
    "made with device=": lambda x: x + torch.zeros(x.shape, device=x.device),
    "made with zeros_like": lambda x: x + torch.zeros_like(x),
    "a reduced default-device tensor": lambda x: x.sum() * torch.arange(3).sum(),
    "a Python list from it": lambda x: x[torch.arange(3).tolist()],
}
_GPU_BUGS = {
    "added to the input": lambda x: x + torch.zeros(x.shape),
    "filled from the input": lambda x: torch.zeros(x.shape).index_copy(0, torch.tensor([0]),
                                                                      x[:1]),
    "returned": lambda x: torch.zeros(3),
    "a gather index": lambda x: x.gather(0, torch.arange(3)),
    "cast but not moved": lambda x: x + torch.tensor([1.0, 2.0, 3.0]).double(),
    "assigned into": lambda x: (lambda out: (out.__setitem__(0, x[0]), out)[1])(torch.zeros(3)),
}


@pytest.mark.parametrize("name", sorted(_GPU_SAFE))
def test_call_accepts_code_that_runs_on_a_gpu(name):
    out = call("ex", _GPU_SAFE[name], torch.ones(3))
    assert type(out) is torch.Tensor


@pytest.mark.parametrize("name", sorted(_GPU_BUGS))
def test_call_rejects_tensors_made_on_the_default_device(name):
    with pytest.raises(CheckFailed, match=r"without saying where it goes: torch\.\w+\(\.\.\.\)"):
        call("ex", _GPU_BUGS[name], torch.ones(3))


def test_the_device_probe_only_watches_calls_with_tensor_inputs():
    # an exercise with no tensor inputs (e.g. packing token lists) makes its tensors anywhere
    out = call("ex", lambda rows: torch.tensor(rows), [[1, 2], [3, 4]])
    assert type(out) is torch.Tensor and out.device.type == "cpu"
