"""Build the notebooks from their single source in `solutions/`.

Each `solutions/NN_name.py` (jupytext percent format) holds a notebook with full solutions.
An exercise is a block inside a code cell, between the marker lines

    # EXERCISE exercise_name
    ...the solution...
    # END EXERCISE

and the next code cell is its check, e.g. `checks.toy.test_forward(ToyModel)`. The learner's
notebook replaces each block with one `raise NotImplementedError(...)` naming the exercise,
keeping everything around it (signature, docstring, hint comments). Cells tagged `setup`
(imports, constants) are the only ones an exercise and its check may rely on.

Build every learner notebook:      python -m sae_course.notebook_build
Check they are up to date:         python -m sae_course.notebook_build --check
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat

from sae_course import __version__
from sae_course.files import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS_DIR = ROOT / "solutions"
NOTEBOOKS_DIR = ROOT / "notebooks"

COURSE_REPOSITORY = "https://github.com/sae-course/sae_course"  # a fork changes this line
# Colab installs the release these notebooks were built with (its tag), never a moving branch.
COLAB_INSTALL_TARGET = f"sae_course @ git+{COURSE_REPOSITORY}@v{__version__}"
COLAB_SETUP_CELL = f'''# Setup. On Google Colab this installs the course package (keeping the
# torch and CUDA that Colab provides); anywhere else it does nothing.
import sys

if "google.colab" in sys.modules:
    import subprocess

    target = "{COLAB_INSTALL_TARGET}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", target], check=True)'''

_BEGIN = re.compile(r"^(?P<indent>[ \t]*)# EXERCISE (?P<name>[A-Za-z_][A-Za-z0-9_]*)[ \t]*$")
_END = re.compile(r"^[ \t]*# END EXERCISE[ \t]*$")
_CHECK_CALL = re.compile(r"\bchecks\.[a-z_0-9]+\.test_[a-z_0-9]+\(")


class SourceError(ValueError):
    """A notebook source breaks the exercise conventions."""


@dataclass(frozen=True)
class Exercise:
    """One exercise found in a notebook source."""

    notebook: str  # the source's stem, e.g. "01_toy_models"
    name: str
    solution: str  # the whole code cell, solution included
    stub: str  # the same cell as the learner sees it
    check: str  # the code cell that follows it


def stub_exercise_cell(source: str, notebook: str = "?") -> tuple[str, list[str]]:
    """Replace every exercise block in a cell's source by a NotImplementedError stub.

    Returns the new source and the names of the exercises found, in order.
    """
    out: list[str] = []
    names: list[str] = []
    open_name: str | None = None
    for lineno, line in enumerate(source.splitlines(), start=1):
        begin = _BEGIN.match(line)
        if open_name is None and begin:
            open_name = begin["name"]
            names.append(open_name)
            out.append(
                f'{begin["indent"]}raise NotImplementedError('
                f'"Exercise {open_name!r} is yours to write: replace this line with your code.")'
            )
        elif open_name is not None and _END.match(line):
            open_name = None
        elif open_name is not None and begin:
            raise SourceError(
                f"{notebook}: exercise {open_name!r} is not closed before line {lineno}"
            )
        elif open_name is None and _END.match(line):
            raise SourceError(f"{notebook}: '# END EXERCISE' without a start at line {lineno}")
        elif open_name is None:
            out.append(line)
    if open_name is not None:
        raise SourceError(f"{notebook}: exercise {open_name!r} has no '# END EXERCISE' line")
    return "\n".join(out), names


def read_source(path: Path) -> nbformat.NotebookNode:
    """Read a percent-format source into a notebook, without outputs."""
    return jupytext.read(path, fmt="py:percent")


def source_paths() -> list[Path]:
    """Every notebook source, in course order."""
    return sorted(SOLUTIONS_DIR.glob("[0-9][0-9]_*.py"))


def exercises(path: Path) -> list[Exercise]:
    """The exercises of one source, each with its stub and its check cell.

    Raises SourceError when an exercise is not followed by a check cell or a name repeats.
    """
    nb = read_source(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    found: list[Exercise] = []
    for i, cell in enumerate(code):
        stub, names = stub_exercise_cell(cell.source, path.stem)
        if not names:
            continue
        if len(names) > 1:
            raise SourceError(f"{path.stem}: one exercise per cell, found {names}")
        check = code[i + 1].source if i + 1 < len(code) else ""
        if not _CHECK_CALL.search(check):
            raise SourceError(
                f"{path.stem}: exercise {names[0]!r} must be followed by a check cell "
                "calling checks.<part>.test_<name>(...)"
            )
        found.append(Exercise(path.stem, names[0], cell.source, stub, check))
    seen = [e.name for e in found]
    dupes = {n for n in seen if seen.count(n) > 1}
    if dupes:
        raise SourceError(f"{path.stem}: exercise names repeat: {sorted(dupes)}")
    return found


def setup_cells(path: Path) -> list[str]:
    """Sources of the code cells tagged `setup`: all an exercise and its check may use."""
    nb = read_source(path)
    return [
        c.source
        for c in nb.cells
        if c.cell_type == "code" and "setup" in c.metadata.get("tags", [])
    ]


def build_notebook(
    path: Path, learner: bool, python_version: str | None = None
) -> nbformat.NotebookNode:
    """The notebook for one source: the learner's (stubs) or the solutions (for the tests).

    `python_version` goes into its metadata (see kernel_metadata)."""
    nb = read_source(path)  # a fresh notebook on every read: safe to edit in place
    cells = [nbformat.v4.new_code_cell(COLAB_SETUP_CELL)]
    for cell in nb.cells:
        if learner and cell.cell_type == "code":
            cell.source, _ = stub_exercise_cell(cell.source, path.stem)
        cells.append(cell)
    nb.cells = cells
    for i, cell in enumerate(nb.cells):
        cell.id = f"{path.stem[:2]}-{i:03d}"
        for key in JUPYTEXT_CELL_KEYS:  # the percent format's layout, not the notebook's
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata = kernel_metadata(python_version)
    nb.nbformat, nb.nbformat_minor = 4, 5
    return nb


JUPYTEXT_CELL_KEYS = ("lines_to_next_cell", "lines_to_end_of_cell_marker", "cell_marker")
"""Cell metadata jupytext adds to remember the source file's blank lines and markers."""


def kernel_metadata(python_version: str | None = None) -> dict[str, dict[str, object]]:
    """The metadata JupyterLab writes once the course's kernel has started, so that opening
    a notebook does not mark it modified. JupyterLab records the kernel's exact Python
    version; the default is this interpreter's, written as ipykernel reports it."""
    return {
        "kernelspec": {
            "display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3",
        },
        "language_info": {
            "codemirror_mode": {"name": "ipython", "version": 3},
            "file_extension": ".py",
            "mimetype": "text/x-python",
            "name": "python",
            "nbconvert_exporter": "python",
            "pygments_lexer": "ipython3",
            "version": python_version or sys.version.split()[0],
        },
    }


def notebook_text(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def build_all(out_dir: Path = NOTEBOOKS_DIR, learner: bool = True) -> list[Path]:
    """Write the notebook of every source into `out_dir` (with the mode any saved file gets,
    0644 under the usual umask); returns the paths written."""
    written = []
    for src in source_paths():
        exercises(src)  # validate the conventions before writing anything
        target = out_dir / f"{src.stem}.ipynb"
        write_text_atomic(target, notebook_text(build_notebook(src, learner)))
        written.append(target)
    return written


def recorded_python(path: Path) -> str | None:
    """The kernel's Python version a built notebook records, if it records one."""
    try:
        return nbformat.read(path, as_version=4).metadata["language_info"]["version"]
    except (OSError, ValueError, KeyError):
        return None


def stale_notebooks() -> list[str]:
    """Learner notebooks that differ from what their source builds (or are missing/extra).

    The Python version in the metadata is not compared: it is the builder's."""
    problems = []
    expected = {src.stem for src in source_paths()}
    for src in source_paths():
        target = NOTEBOOKS_DIR / f"{src.stem}.ipynb"
        want = notebook_text(build_notebook(src, True, recorded_python(target)))
        if not target.exists():
            problems.append(f"{target.name} is missing")
        elif target.read_text(encoding="utf-8") != want:
            problems.append(f"{target.name} is out of date with solutions/{src.name}")
    for nb in NOTEBOOKS_DIR.glob("*.ipynb"):
        if nb.stem not in expected:
            problems.append(f"{nb.name} has no source in solutions/")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a notebook is stale")
    parser.add_argument("--solutions-to", type=Path, help="also write solution notebooks here")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale_notebooks()
        for p in problems:
            print(p)
        if problems:
            print("Rebuild with: python -m sae_course.notebook_build")
        return 1 if problems else 0
    for path in build_all():
        print(f"wrote {path.relative_to(ROOT)}")
    if args.solutions_to:
        for path in build_all(args.solutions_to, learner=False):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
