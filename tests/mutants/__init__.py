"""Wrong implementations of the exercises: the mistakes learners really make.

Each `tests/mutants/NN_name.py` lists `MUTANTS` for the notebook source `solutions/NN_name.py`.
A mutant is a text replacement applied to one exercise's solution cell; the meta-tests prove
the exercise's check rejects every one.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mutant:
    exercise: str  # the name after "# EXERCISE"
    name: str  # what the mistake is, as an identifier
    old: str  # text in the solution cell, occurring exactly once
    new: str  # what the mistake writes instead

    def apply(self, solution_cell: str) -> str:
        count = solution_cell.count(self.old)
        if count != 1:
            raise ValueError(
                f"mutant {self.exercise}/{self.name}: {self.old!r} occurs {count} times in the "
                "exercise cell (must be exactly once); update the mutant to the current source"
            )
        return solution_cell.replace(self.old, self.new)


def mutants_for(notebook_stem: str) -> list[Mutant]:
    """The mutants kept for one notebook source (empty if it has no file)."""
    path = Path(__file__).parent / f"{notebook_stem}.py"
    if not path.exists():
        return []
    spec = importlib.util.spec_from_file_location(f"mutants_{notebook_stem}", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return list(module.MUTANTS)
