"""Meta-tests of the exercise checks, discovered from the notebook sources.

For every exercise in every `solutions/NN_name.py`: a check cell follows it (enforced when
the exercises are read), the reference solution passes its check, the learner's stub fails
with a NotImplementedError naming the exercise, and at least 2 mutants exist, each rejected.
"""

from __future__ import annotations

import contextlib
import io

import pytest

from sae_course.checks import CheckFailed
from sae_course.notebook_build import exercises, setup_cells, source_paths
from tests.mutants import mutants_for

EXERCISES = [(path, ex) for path in source_paths() for ex in exercises(path)]
IDS = [f"{ex.notebook}:{ex.name}" for _, ex in EXERCISES]
MUTANTS = [
    (path, ex, m)
    for path, ex in EXERCISES
    for m in mutants_for(ex.notebook)
    if m.exercise == ex.name
]


def run_cells(*sources: str) -> str:
    """Run cell sources in one fresh namespace, as a kernel would; returns what they print."""
    namespace: dict = {"__name__": "__main__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for source in sources:
            exec(compile(source, "<cell>", "exec"), namespace)
    return out.getvalue()


def test_every_source_has_exercises():
    assert source_paths(), "no notebook sources found in solutions/"
    for path in source_paths():
        assert exercises(path), f"{path.name} has no exercises"


@pytest.mark.parametrize(("path", "ex"), EXERCISES, ids=IDS)
def test_reference_passes(path, ex):
    printed = run_cells(*setup_cells(path), ex.solution, ex.check)
    assert "\N{CHECK MARK}" in printed, f"the check printed no success line: {printed!r}"


@pytest.mark.parametrize(("path", "ex"), EXERCISES, ids=IDS)
def test_stub_fails_naming_exercise(path, ex):
    with pytest.raises(NotImplementedError, match=repr(ex.name)):
        run_cells(*setup_cells(path), ex.stub, ex.check)


@pytest.mark.parametrize(("path", "ex"), EXERCISES, ids=IDS)
def test_at_least_two_mutants(path, ex):
    names = [m.name for m in mutants_for(ex.notebook) if m.exercise == ex.name]
    assert len(names) >= 2, f"{ex.notebook}:{ex.name} has mutants {names}; needs at least 2"


def test_mutants_name_real_exercises():
    known = {(ex.notebook, ex.name) for _, ex in EXERCISES}
    for path in source_paths():
        for m in mutants_for(path.stem):
            assert (path.stem, m.exercise) in known, f"mutant {m} names no exercise"


@pytest.mark.parametrize(
    ("path", "ex", "mutant"),
    MUTANTS,
    ids=[f"{e.notebook}:{e.name}:{m.name}" for _, e, m in MUTANTS],
)
def test_mutant_is_rejected(path, ex, mutant):
    wrong = mutant.apply(ex.solution)
    assert wrong != ex.solution
    with pytest.raises(CheckFailed):
        run_cells(*setup_cells(path), wrong, ex.check)
