"""What every exercise check is built from: failures that explain themselves.

A check calls the learner's code on seeded inputs and edge cases, compares with the
reference, and either prints one line starting with a tick or raises `CheckFailed`, whose
message says what differs and, when the answer matches a known mistake, names it.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _library_file(filename: str) -> bool:
    """True for the course's own files and installed packages (not the learner's cells)."""
    path = Path(filename).resolve()
    return path.is_relative_to(_PACKAGE_DIR) or "site-packages" in path.parts


class CheckFailed(AssertionError):
    """The learner's code gave a different answer from the reference.

    In Jupyter it shows as its message, not as a traceback through the checks (IPython calls
    `_render_traceback_`); when it wraps an error raised by the learner's code, the line of
    that code which raised is shown too.
    """

    def _render_traceback_(self) -> list[str]:
        lines = [f"CheckFailed: {self}"]
        cause = self.__cause__
        if cause is not None and cause.__traceback__ is not None:
            yours = [f for f in traceback.extract_tb(cause.__traceback__)
                     if not _library_file(f.filename)]
            if yours:
                lines.append(f"  raised in your code at line {yours[-1].lineno}: "
                             f"{yours[-1].line}")
        return lines


def passed(exercise: str, detail: str) -> None:
    """Print the one line a passing check shows."""
    print(f"\N{CHECK MARK} {exercise}: {detail}")


def call(exercise: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the learner's code; an error other than the stub's becomes a CheckFailed.

    NotImplementedError passes through, so an unwritten exercise says so; in Jupyter it shows
    as its message alone (which names the exercise), not a traceback through the checks.
    """
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as err:
        short = [f"NotImplementedError: {err}"]
        err._render_traceback_ = lambda: short  # type: ignore[attr-defined]
        raise
    except CheckFailed:
        raise
    except Exception as err:  # the learner's bug: report it as the check's finding
        raise CheckFailed(
            f"{exercise}: calling your code raised {type(err).__name__}: {err}"
        ) from err


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU random generator seeded with `seed`: the checks' inputs are reproducible."""
    return torch.Generator().manual_seed(seed)


def _describe(t: Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}"


def _matches(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and torch.allclose(
        a.detach().double().cpu(), b.detach().double().cpu(), atol=atol, rtol=rtol
    )


def compare(
    actual: Any,
    expected: Tensor,
    *,
    exercise: str,
    what: str,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    mistakes: Mapping[str, Tensor] | None = None,
) -> None:
    """Raise CheckFailed unless `actual` equals `expected` (a tensor) within tolerance.

    `mistakes` maps a description of a known mistake ("the ReLU is missing") to the answer
    that mistake gives; when `actual` matches one, the message names it.
    """
    if not isinstance(actual, Tensor):
        raise CheckFailed(
            f"{exercise}: {what} should be a torch.Tensor of {_describe(expected)}, "
            f"got {type(actual).__name__}."
        )
    hint = ""
    for description, wrong in (mistakes or {}).items():
        if _matches(actual, wrong, atol, rtol):
            hint = f" This is what you get when {description}."
            break
    if actual.shape != expected.shape:
        raise CheckFailed(
            f"{exercise}: {what} has shape {tuple(actual.shape)} but should have shape "
            f"{tuple(expected.shape)}.{hint}"
        )
    if torch.isnan(actual.detach().float()).any() and not torch.isnan(expected.float()).any():
        raise CheckFailed(f"{exercise}: {what} contains NaN values.{hint}")
    if not _matches(actual, expected, atol, rtol):
        diff = (actual.detach().double().cpu() - expected.detach().double().cpu()).abs()
        worst = torch.nan_to_num(diff, nan=float("inf")).argmax()
        index = tuple(int(i) for i in torch.unravel_index(worst, diff.shape))
        raise CheckFailed(
            f"{exercise}: {what} differs from the reference: largest difference "
            f"{diff.max().item():.3g} at index {index} (yours "
            f"{actual.detach().reshape(-1)[worst].item():.5g}, expected "
            f"{expected.detach().reshape(-1)[worst].item():.5g}).{hint}"
        )


def require(condition: bool, exercise: str, message: str) -> None:
    """Raise CheckFailed with `message` unless `condition` holds."""
    if not condition:
        raise CheckFailed(f"{exercise}: {message}")
