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


def test_built_notebooks_open_clean_in_jupyterlab(source, tmp_path, monkeypatch):
    """What JupyterLab writes on opening a notebook is already there, so opening one does not
    mark it modified: nbformat 4.5 with a valid unique id per cell, the kernelspec of the
    kernel and the language_info that ipykernel reports (JupyterLab overwrites both when they
    differ), no jupytext bookkeeping in the cells; the file is 0644 under the usual umask."""
    import stat

    import nbformat
    from ipykernel.ipkernel import IPythonKernel
    from jupyter_client.kernelspec import KernelSpecManager

    from sae_course import files, notebook_build

    monkeypatch.setattr(notebook_build, "source_paths", lambda: [source])
    monkeypatch.setattr(files, "UMASK", 0o022)
    (path,) = notebook_build.build_all(tmp_path / "out")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) == (4, nbformat.current_nbformat_minor) == (4, 5)
    ids = [c.id for c in nb.cells]
    assert len(set(ids)) == len(ids) and all(0 < len(i) <= 64 for i in ids)
    spec = KernelSpecManager().get_kernel_spec(nb.metadata.kernelspec.name)
    assert nb.metadata.kernelspec == {
        "name": "python3", "display_name": spec.display_name, "language": spec.language,
    }
    assert nb.metadata.language_info == IPythonKernel.language_info
    assert set(nb.metadata) == {"kernelspec", "language_info"}
    assert [c.metadata for c in nb.cells] == [{}, {}, {"tags": ["setup"]}, {}, {}]
