"""What every exercise check is built from: failures that explain themselves.

A check calls the learner's code on seeded inputs and edge cases, compares with the
reference, and either prints one line starting with a tick or raises `CheckFailed`, whose
message says what differs and, when the answer matches a known mistake, names it.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

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


class _Stray(Tensor):
    """A tensor the learner's code made on the default device (see `_DefaultDeviceProbe`)."""

    __torch_function__ = torch._C._disabled_torch_function_impl


_MOVES = {Tensor.to, Tensor.cuda, Tensor.type_as}
_INDEXING = {Tensor.__getitem__, Tensor.__setitem__}


def _plain(t: Any) -> Any:
    return t.as_subclass(Tensor) if isinstance(t, _Stray) else t


class _DefaultDeviceProbe(TorchFunctionMode):
    """Plays the part of a GPU while the learner's code runs on CPU inputs.

    On a GPU, a tensor made by a factory (`torch.zeros`, `torch.arange`, `torch.tensor`, ...)
    without `device=` lands on the CPU, apart from the inputs. Here every such tensor that the
    learner's own code makes (not the library's or torch's) is marked, and so is everything
    computed from it; an operation that mixes a marked tensor with the inputs fails as it would
    on a GPU, and so does returning one. As on a GPU, marked 0-dimensional tensors
    (`torch.tensor(0.5)`) mix freely, marked tensors may index the inputs, and `.to(device)`
    clears the mark.
    """

    def __init__(self) -> None:
        super().__init__()
        self.created: str | None = None  # the first marked factory call, for the message
        self._factories = _device_constructors()

    def _mark(self, func: Callable, caller: Any) -> None:
        if self.created is None:
            line = (traceback.extract_stack(caller, limit=1)[-1].line or "").strip()
            self.created = f"torch.{func.__name__}(...)" + (f" in `{line}`" if line else "")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, spec = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, Tensor)]
        strays = [t for t in tensors if isinstance(t, _Stray)]
        if func in self._factories and not tensors:
            result = func(*args, **kwargs)
            caller = sys._getframe(1)
            if (kwargs.get("device") is None and isinstance(result, Tensor)
                    and not _library_file(caller.f_code.co_filename)):
                self._mark(func, caller)
                return result.as_subclass(_Stray)
            return result
        if not strays:
            return func(*args, **kwargs)
        plain_args, plain_kwargs = tree_unflatten([_plain(t) for t in flat], spec)
        moved = func in _MOVES and (
            func is Tensor.cuda or "device" in kwargs
            or any(isinstance(a, torch.device | str | Tensor) and not isinstance(a, _Stray)
                   for a in args[1:]))
        if moved:
            return func(*plain_args, **plain_kwargs)
        indexing = func in _INDEXING and not isinstance(args[0], _Stray)
        if not indexing and any(s.dim() > 0 for s in strays) and len(strays) < len(tensors):
            raise RuntimeError("Expected all tensors to be on the same device, but found at "
                               "least two devices, meta (made on the default device) and cpu!")
        result = func(*plain_args, **plain_kwargs)
        if indexing or len(strays) < len(tensors):  # the inputs' device wins, as on a GPU
            return result
        return tree_map(lambda t: t.as_subclass(_Stray) if isinstance(t, Tensor) else t, result)


def _has_tensors(values: Any, depth: int = 3) -> bool:
    """True when `values` holds a tensor or a module (looking `depth` containers deep) or an
    iterator, such as a stream of activation batches."""
    if isinstance(values, Tensor | torch.nn.Module | Iterator):
        return True
    if depth and isinstance(values, Mapping):
        values = list(values.values())
    if depth and isinstance(values, list | tuple):
        return any(_has_tensors(v, depth - 1) for v in values)
    return False


def _stray(value: Any, depth: int = 3) -> bool:
    if isinstance(value, Tensor):
        return isinstance(value, _Stray)
    if depth and isinstance(value, Mapping):
        value = list(value.values())
    if depth and isinstance(value, list | tuple):
        return any(_stray(v, depth - 1) for v in value)
    return False


def _device_failure(exercise: str, created: str | None) -> CheckFailed:
    return CheckFailed(
        f"{exercise}: your code makes a tensor without saying where it goes: "
        f"{created or 'a factory call without device='}. On a GPU it would land on the CPU "
        "while the inputs are on the GPU, and fail there. Create it next to the inputs: pass "
        "device= an input's device (device=x.device for an input x), or use "
        "torch.zeros_like(x) / x.new_zeros(...)."
    )


def call(exercise: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the learner's code; an error other than the stub's becomes a CheckFailed.

    NotImplementedError passes through, so an unwritten exercise says so; in Jupyter it shows
    as its message alone (which names the exercise), not a traceback through the checks.
    When the inputs hold tensors, the call runs under `_DefaultDeviceProbe`: a tensor the
    learner's code creates on the default device, apart from the inputs, fails the check.
    """
    probe = _DefaultDeviceProbe()
    watch = probe if _has_tensors((args, kwargs)) else contextlib.nullcontext()
    try:
        with watch:
            result = fn(*args, **kwargs)
    except NotImplementedError as err:
        short = [f"NotImplementedError: {err}"]
        err._render_traceback_ = lambda: short  # type: ignore[attr-defined]
        raise
    except CheckFailed:
        raise
    except Exception as err:  # the learner's bug: report it as the check's finding
        if probe.created is not None and "made on the default device" in str(err):
            raise _device_failure(exercise, probe.created) from None
        raise CheckFailed(
            f"{exercise}: calling your code raised {type(err).__name__}: {err}"
        ) from err
    if _stray(result):
        raise _device_failure(exercise, probe.created)
    return result


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
