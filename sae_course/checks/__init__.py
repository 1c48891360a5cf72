"""Exercise checks, one module per notebook: `checks.toy.test_forward(ToyModel)` and so on.

Each check compares the learner's function or class with the reference in `sae_course`
on seeded random inputs and edge cases. It prints one line on success and raises
`CheckFailed` saying what differs on failure.
"""

import importlib

from sae_course.checks.harness import CheckFailed

__all__ = ["CheckFailed"]

# Part name -> module; imported on first use so one part's heavy imports do not slow another.
_PARTS = {"toy": "toy", "toy_sae": "toy_sae", "activations": "activations", "lm_sae": "lm_sae",
          "interpret": "interpret", "steer": "steer"}


def __getattr__(name: str):
    if name in _PARTS:
        return importlib.import_module(f"sae_course.checks.{_PARTS[name]}")
    raise AttributeError(f"sae_course.checks has no part {name!r}; parts: {sorted(_PARTS)}")
