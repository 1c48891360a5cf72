"""What every exercise check is built from: failures that explain themselves.

A check calls the learner's code on seeded inputs and edge cases, compares with the
reference, and either prints one line starting with a tick or raises `CheckFailed`, whose
message says what differs and, when the answer matches a known mistake, names it.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
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


def unchanged(exercise: str, before: Any, after: Any, what: str) -> None:
    """Raise CheckFailed when the learner's code changed an input in place: `before` is a copy
    the check kept, `after` the object the learner was given (tensors, lists, dicts)."""
    if isinstance(before, Tensor):
        same = (isinstance(after, Tensor) and before.shape == after.shape
                and torch.equal(before, after.detach()))
    else:
        same = before == after
    if not same:
        raise CheckFailed(
            f"{exercise}: your code changed {what} in place. Work on new tensors (or lists) "
            "instead: the caller still needs its inputs as they were."
        )


def same_kind(exercise: str, actual: Any, expected: Tensor, what: str) -> None:
    """Raise CheckFailed unless `actual` is a tensor with the dtype and device of `expected`."""
    if not isinstance(actual, Tensor):
        raise CheckFailed(f"{exercise}: {what} should be a torch.Tensor of {_describe(expected)}, "
                          f"got {type(actual).__name__}.")
    if actual.dtype != expected.dtype:
        raise CheckFailed(f"{exercise}: {what} has dtype {actual.dtype} but should keep the "
                          f"input's dtype {expected.dtype} (no .float() or torch.tensor(...) "
                          "without a dtype).")
    if actual.device != expected.device:
        raise CheckFailed(f"{exercise}: {what} is on {actual.device} but the input is on "
                          f"{expected.device}; create new tensors with device=... of the input.")


# ---------------------------------------------------------------- exercises that use a model

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks_with_kwargs")
_LENS_HOOK_LISTS = ("fwd_hooks", "bwd_hooks")  # TransformerLens HookPoints keep their handles


@dataclass
class ModelWatch:
    """What `watch_model` saw while the learner's code ran on the model."""

    forward_passes: int = 0
    hooks_left: int = 0
    left_at: tuple[str, ...] = ()
    weights_changed: bool = False


def _hook_state(module: torch.nn.Module) -> tuple[dict[str, set[int]], dict[str, set[int]]]:
    torch_hooks = {a: set(getattr(module, a)) for a in _HOOK_DICTS if hasattr(module, a)}
    lens_hooks = {a: {id(h) for h in getattr(module, a)} for a in _LENS_HOOK_LISTS
                  if isinstance(getattr(module, a, None), list)}
    return torch_hooks, lens_hooks


@contextlib.contextmanager
def watch_model(exercise: str, model: torch.nn.Module,
                count_calls_of: torch.nn.Module | None = None) -> Iterator[ModelWatch]:
    """Run the learner's code on `model` inside this block; whatever happens in it, the model
    comes out as it went in: every hook added in the block is removed, and train/eval modes and
    the grad mode are restored. If the block ends normally, a hook left behind or weights
    changed in place raise CheckFailed; `watch.forward_passes` counts the calls of
    `count_calls_of` (a module that runs once per forward pass, e.g. the embedding's hook point).
    A changed weight cannot be undone here: the caller should discard the model.
    """
    watch = ModelWatch()
    names = {id(m): n for n, m in model.named_modules()}
    before = {id(m): _hook_state(m) for m in model.modules()}
    modes = [(m, m.training) for m in model.modules()]
    versions = [(p, p._version) for p in [*model.parameters(), *model.buffers()]]
    grad_mode = torch.is_grad_enabled()

    def count(module: torch.nn.Module, args: Any) -> None:
        watch.forward_passes += 1

    counter = count_calls_of.register_forward_pre_hook(count) if count_calls_of else None
    try:
        yield watch
    finally:
        if counter is not None:
            counter.remove()
        left = []
        for module in model.modules():
            torch_before, lens_before = before.get(id(module), ({}, {}))
            for attr, keys in _hook_state(module)[0].items():
                for key in keys - torch_before.get(attr, set()):
                    getattr(module, attr).pop(key, None)
                    if attr in _HOOK_DICTS[:4]:
                        left.append(names.get(id(module), "?") or "the model")
            for attr in _LENS_HOOK_LISTS:
                handles = getattr(module, attr, None)
                if isinstance(handles, list):
                    keep = lens_before.get(attr, set())
                    handles[:] = [h for h in handles if id(h) in keep]
        for module, mode in modes:
            module.training = mode
        torch.set_grad_enabled(grad_mode)
        watch.hooks_left, watch.left_at = len(left), tuple(sorted(set(left)))
        watch.weights_changed = any(p._version != v for p, v in versions)
    if watch.hooks_left:
        raise CheckFailed(
            f"{exercise}: your code left {watch.hooks_left} hook(s) on the model (at "
            f"{', '.join(watch.left_at)}); every later forward pass would still run them. Add "
            "hooks with run_with_hooks(...) or `with model.hooks(fwd_hooks=...):`, which remove "
            "them when the pass ends, even when a hook raises. (The check has removed them.)"
        )
    if watch.weights_changed:
        raise CheckFailed(f"{exercise}: your code changed the model's weights in place; it "
                          "should only read activations.")
