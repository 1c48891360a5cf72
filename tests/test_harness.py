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
