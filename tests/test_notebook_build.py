"""The notebook build: stubs keep signature, docstring and hint; bad sources are refused."""

from __future__ import annotations

import textwrap

import pytest

from sae_course.notebook_build import (
    COLAB_SETUP_CELL,
    SourceError,
    build_notebook,
    exercises,
    setup_cells,
    stub_exercise_cell,
)

SOURCE = textwrap.dedent(
    '''\
    # %% [markdown]
    # # A tiny notebook

    # %% tags=["setup"]
    import math
    from sae_course import checks

    # %%
    def double(x: float) -> float:
        """Twice x."""
        # Hint: multiply.
        # EXERCISE double
        return 2 * x
        # END EXERCISE

    # %%
    checks.toy.test_double(double)
    '''
)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "09_tiny.py"
    path.write_text(SOURCE)
    return path


def test_stub_keeps_signature_docstring_and_hint():
    cell = SOURCE.split("# %%\n")[-2]
    stub, names = stub_exercise_cell(cell)
    assert names == ["double"]
    assert "def double(x: float) -> float:" in stub and '"""Twice x."""' in stub
    assert "# Hint: multiply." in stub
    assert "return 2 * x" not in stub
    assert "    raise NotImplementedError(\"Exercise 'double' is yours to write" in stub


def test_exercises_and_setup_cells_are_found(source):
    (ex,) = exercises(source)
    assert (ex.notebook, ex.name) == ("09_tiny", "double")
    assert ex.check.strip() == "checks.toy.test_double(double)"
    assert setup_cells(source) == ["import math\nfrom sae_course import checks"]


def test_learner_and_solution_notebooks(source):
    learner = build_notebook(source, learner=True)
    solution = build_notebook(source, learner=False)
    assert learner.cells[0].source == solution.cells[0].source == COLAB_SETUP_CELL
    assert "NotImplementedError" in learner.cells[3].source
    assert "return 2 * x" in solution.cells[3].source
    assert all(c.get("outputs", []) == [] for c in learner.cells)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("# EXERCISE a\nx = 1\n", "has no '# END EXERCISE'"),
        ("x = 1\n# END EXERCISE\n", "without a start"),
        ("# EXERCISE a\n# EXERCISE b\n# END EXERCISE\n", "is not closed"),
    ],
)
def test_broken_markers_are_refused(body, message):
    with pytest.raises(SourceError, match=message):
        stub_exercise_cell(body)


def test_exercise_without_check_is_refused(tmp_path):
    path = tmp_path / "09_bad.py"
    path.write_text(SOURCE.replace("checks.toy.test_double(double)", "print(double(2))"))
    with pytest.raises(SourceError, match="must be followed by a check cell"):
        exercises(path)
