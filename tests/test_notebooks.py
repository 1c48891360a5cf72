"""The generated learner notebooks: up to date, without outputs, and they stop at exercise one.

(The solution notebooks themselves are run top to bottom by nbval: see conftest.py.)
"""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from sae_course.notebook_build import (
    COLAB_SETUP_CELL,
    NOTEBOOKS_DIR,
    exercises,
    source_paths,
    stale_notebooks,
)

SOURCES = source_paths()


def test_learner_notebooks_are_up_to_date():
    assert stale_notebooks() == []


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_learner_notebook_has_no_outputs_and_starts_with_colab_setup(src):
    nb = nbformat.read(NOTEBOOKS_DIR / f"{src.stem}.ipynb", as_version=4)
    assert nb.cells[0].source == COLAB_SETUP_CELL
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
        assert "# EXERCISE" not in cell.source, "a solution leaked into the learner notebook"


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_learner_notebook_stops_at_its_first_exercise(src, tmp_path):
    first = exercises(src)[0].name
    nb = nbformat.read(NOTEBOOKS_DIR / f"{src.stem}.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(CellExecutionError) as info:
        client.execute()
    assert info.value.ename == "NotImplementedError"
    assert repr(first) in info.value.evalue, info.value.evalue
