"""Notebook 03's checks: each new kind of mistake fails for its own reason, a learner's failing
attempt leaves the checks' model clean for every later check, and correct rewrites pass."""

from __future__ import annotations

import pytest

from sae_course.checks import CheckFailed
from sae_course.checks import activations as checks03
from sae_course.notebook_build import SOLUTIONS_DIR, exercises, setup_cells
from tests.mutants import mutants_for
from tests.test_exercises import run_cells

SOURCE = SOLUTIONS_DIR / "03_activations.py"
SETUP = setup_cells(SOURCE)
EXERCISES = {ex.name: ex for ex in exercises(SOURCE)}
MUTANTS = {m.name: m for m in mutants_for("03_activations")}

# mutant -> what its failure must say (the kind of mistake it stands for)
REASONS = {
    "add_hook_left_behind": r"left \d+ hook",
    "one_forward_pass_per_hook": "forward passes",
    "one_forward_pass_per_layer": "forward passes",
    "runs_twice": "ran 2 forward passes",
    "squares_the_input_in_place": "in place",
    "appends_to_the_input_documents": "in place",
    "shuffles_new_in_place": "in place",
    "scales_the_input_in_place": "in place",
    "sorts_the_hook_names_in_place": "in place",
    "shifts_the_tokens_in_place": "in place",
    "rolls_the_tokens_in_place": "in place",
    "resizes_the_input_in_place": "in place",
    "casts_to_float32": "dtype",
    "pool_cast_to_float32": "dtype",
    "returns_a_python_float": "torch.Tensor",
    "separator_hardcoded_50256": "differs from the reference",
}


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _mutants_for_reason():
    for name, reason in REASONS.items():
        for m in mutants_for("03_activations"):
            if m.name == name:
                yield pytest.param(m, reason, id=f"{m.exercise}:{m.name}")


@pytest.mark.parametrize(("mutant", "reason"), list(_mutants_for_reason()))
def test_each_kind_of_mistake_fails_for_its_reason(mutant, reason):
    ex = EXERCISES[mutant.exercise]
    with pytest.raises(CheckFailed, match=reason):
        run_cells(*SETUP, mutant.apply(ex.solution), ex.check)


@pytest.mark.parametrize("exercise", ["capture_activations", "stop_early_activations"])
def test_a_hook_left_behind_is_removed_and_later_checks_still_pass(exercise):
    model = checks03.check_model()
    clean = _hooks(model)
    ex = EXERCISES[exercise]
    wrong = [m for m in mutants_for("03_activations")
             if m.exercise == exercise and m.name == "add_hook_left_behind"][0]
    with pytest.raises(CheckFailed, match=r"left \d+ hook"):
        run_cells(*SETUP, wrong.apply(ex.solution), ex.check)
    assert _hooks(model) == clean
    for later in ("residual_stream", "stop_early_activations", "capture_activations"):
        printed = run_cells(*SETUP, EXERCISES[later].solution, EXERCISES[later].check)
        assert "\N{CHECK MARK}" in printed


def test_a_hook_that_raises_outside_run_with_hooks_is_removed():
    """The learner's own hook raises an error (not StopForward) and is never removed."""
    model = checks03.check_model()
    clean = _hooks(model)

    def capture(model, tokens, hook_names):
        def broken(acts, hook):
            raise ValueError("oops")

        model.add_hook(hook_names[0], broken)
        model(tokens)

    with pytest.raises(CheckFailed, match="ValueError: oops"):
        checks03.test_capture_activations(capture)
    assert _hooks(model) == clean
    printed = run_cells(*SETUP, EXERCISES["residual_stream"].solution,
                        EXERCISES["residual_stream"].check)
    assert "\N{CHECK MARK}" in printed


def test_the_given_model_must_be_used():
    other = checks03.check_model.__wrapped__()  # a second model, as the notebook's own

    def capture(model, tokens, hook_names):
        _, cache = other.run_with_cache(tokens, names_filter=hook_names)
        return {name: cache[name] for name in hook_names}

    with pytest.raises(CheckFailed, match="never ran the model it was given"):
        checks03.test_capture_activations(capture)


REWRITES = {
    "capture_activations": [
        ("storage: dict[str, Tensor] = {}",
         "storage: dict[str, Tensor] = {}\n    _, cache = model.run_with_cache(tokens, "
         "names_filter=hook_names)\n    return {name: cache[name] for name in hook_names}"),
        ("    model.run_with_hooks(tokens, fwd_hooks=[(name, make_hook(name)) for name in "
         "hook_names])\n",
         "    with model.hooks(fwd_hooks=[(name, make_hook(name)) for name in hook_names]):\n"
         "        model(tokens)\n"),
        ("    model.run_with_hooks(tokens, fwd_hooks=[(name, make_hook(name)) for name in "
         "hook_names])\n",
         "    for name in hook_names:\n        model.add_hook(name, make_hook(name))\n"
         "    try:\n        model(tokens)\n    finally:\n        model.reset_hooks()\n"),
        ("    model.run_with_hooks(tokens, fwd_hooks=[(name, make_hook(name)) for name in "
         "hook_names])\n",
         "    with torch.no_grad():\n        model.run_with_hooks(tokens, fwd_hooks=[(name, "
         "make_hook(name)) for name in hook_names])\n"),
    ],
    "stop_early_activations": [
        ("        model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook_fn)])\n",
         "        with model.hooks(fwd_hooks=[(hook_name, hook_fn)]):\n"
         "            model(tokens)\n"),
        ("        model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook_fn)])\n",
         "        model.add_hook(hook_name, hook_fn)\n        try:\n            model(tokens)\n"
         "        finally:\n            model.reset_hooks()\n"),
    ],
    "norm_scale_factor": [
        ("return math.sqrt(acts.shape[-1]) / acts.norm(dim=-1).mean()",
         "return acts.shape[-1] ** 0.5 / torch.linalg.vector_norm(acts, dim=1).mean()"),
    ],
    "residual_norms": [
        ("return resid.norm(dim=-1).mean(dim=1)",
         "return resid.pow(2).sum(-1).sqrt().mean(1)"),
    ],
    "pack_contexts": [
        ("    stream: list[int] = []\n    for doc in token_lists:\n        stream.extend(doc)\n"
         "        stream.append(bos_id)\n",
         "    stream = [t for doc in token_lists for t in [*doc, bos_id]]\n"),
    ],
}


@pytest.mark.parametrize(("exercise", "old", "new"),
                         [(e, o, n) for e, rs in REWRITES.items() for o, n in rs])
def test_correct_rewrites_pass(exercise, old, new):
    ex = EXERCISES[exercise]
    assert ex.solution.count(old) == 1
    printed = run_cells(*SETUP, ex.solution.replace(old, new), ex.check)
    assert "\N{CHECK MARK}" in printed
