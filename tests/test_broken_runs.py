"""The shipped broken-run logs, the diagnosis check, and how a failed check shows in Jupyter."""

from __future__ import annotations

import pytest

from sae_course.broken_runs import (
    DIAGNOSES,
    answer_digest,
    load_broken_runs,
    write_broken_run,
)
from sae_course.checks import CheckFailed, lm_sae
from sae_course.checks.harness import call

KEYS = {"step", "loss", "loss_mse", "l0", "explained_variance", "dead_fraction"}


def test_shipped_logs_one_per_diagnosis_without_their_answers():
    runs = load_broken_runs()
    assert len(runs) == len(DIAGNOSES)
    digests = {run.digest for run in runs.values()}
    assert len(digests) == len(runs)
    for run in runs.values():
        assert run.history and KEYS <= set(run.history[-1])
        assert {"ce_gap", "explained_variance", "l0", "dead_fraction"} <= set(run.in_model)
        assert sum(run.is_diagnosis(d) for d in DIAGNOSES) == 1
    answered = {d for run in runs.values() for d in DIAGNOSES if run.is_diagnosis(d)}
    assert answered == set(DIAGNOSES)


def test_write_and_load_round_trip(tmp_path):
    history = [{"step": 1, "loss": 2.0, "loss_mse": 2.0, "l0": 3.0,
                "explained_variance": 0.5, "dead_fraction": 0.0}]
    in_model = {"ce_gap": 0.1, "explained_variance": 0.9, "l0": 3.0, "dead_fraction": 0.0,
                "dense_fraction": 0.0}
    write_broken_run(tmp_path, "x", history, in_model, "healthy")
    run = load_broken_runs(tmp_path)["x"]
    assert run.history == history and run.digest == answer_digest("x", "healthy")
    assert run.is_diagnosis("healthy") and not run.is_diagnosis("lr_too_high")
    assert "CE gap" in run.note()
    with pytest.raises(ValueError, match="Unknown diagnosis"):
        write_broken_run(tmp_path, "y", history, in_model, "bad luck")
    with pytest.raises(FileNotFoundError, match="make_broken_runs"):
        load_broken_runs(tmp_path / "empty")


def _right_answers() -> dict[str, str]:
    runs = load_broken_runs()
    return {name: next(d for d in DIAGNOSES if run.is_diagnosis(d)) for name, run in runs.items()}


def test_diagnosis_check_passes_the_right_answers_and_names_wrong_runs(capsys):
    answers = _right_answers()
    lm_sae.test_diagnosis(answers)
    assert "all 6 runs diagnosed correctly" in capsys.readouterr().out
    names = sorted(answers)
    wrong = {**answers, names[0]: answers[names[1]], names[1]: answers[names[0]]}
    with pytest.raises(CheckFailed, match=f"2 of 6 .*{names[0]}, {names[1]}"):
        lm_sae.test_diagnosis(wrong)
    with pytest.raises(CheckFailed, match="not one of the choices"):
        lm_sae.test_diagnosis({**answers, names[0]: "cosmic rays"})
    with pytest.raises(CheckFailed, match="missing"):
        lm_sae.test_diagnosis({names[0]: answers[names[0]]})


def test_check_failed_shows_its_message_and_the_learners_line():
    def learner(x):
        return x.nonexistent  # noqa: B009  (the learner's bug)

    with pytest.raises(CheckFailed) as info:
        call("ex", learner, 3)
    lines = info.value._render_traceback_()
    assert lines[0].startswith("CheckFailed: ex: calling your code raised AttributeError")
    assert "return x.nonexistent" in lines[1]
    plain = CheckFailed("ex: differs")._render_traceback_()
    assert plain == ["CheckFailed: ex: differs"]
