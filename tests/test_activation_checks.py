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
    # residual_norm_profile
    "bos_included_in_others": "BOS in the others' mean",
    "ratio_inverted": "inverted the ratio",
    "ratio_per_context_then_averaged": "ratio in each context",
    "difference_not_ratio": "difference, not the ratio",
    "ratio_rebuilt_from_python_floats": "dtype",
    "no_error_for_a_single_position": "single position.*returned a result",
    # estimate_norm_scale_factor
    "d_instead_of_sqrt_d": "d_in instead of sqrt",
    "inverted": "inverted the factor",
    "rms_norm": "root-mean-square",
    "mean_absolute_component": "mean absolute component",
    "rebuilt_with_torch_tensor": "without saying where it goes",
    "scales_the_batches_in_place": "in place",
    "only_the_first_batch": "only the first batch",
    "running_sum_overwritten": "overwrote the running sum",
    "n_batches_ignored": "every batch there was",
    "draws_one_batch_too_many": "the factor is right, but your code drew 4 batches",
    "indexes_the_batches_as_a_list": "not subscriptable",
    "mean_of_batch_means": "averaged the mean norms of the batches",
    "counts_batches_not_tokens": "counted batches instead of tokens",
    "no_error_when_too_few_batches": "fewer batches than asked for.*returned a result",
    "no_check_of_the_width": "two different hooks.*returned a result",
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


SCALE_BODY = """    total, count, seen, d = 0.0, 0, 0, None
    for batch in islice(batches, n_batches):
        if d is None:
            d = batch.shape[-1]
        elif batch.shape[-1] != d:
            raise ValueError(f"batch {seen} has width {batch.shape[-1]}, the first had {d}")
        total = total + batch.norm(dim=-1).sum()
        count += batch.shape[0]
        seen += 1
    if seen < n_batches:
        raise ValueError(f"asked for {n_batches} batches, only {seen} came")
    return math.sqrt(d) / (total / count)
"""

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
    "estimate_norm_scale_factor": [
        # concatenating the batches holds them all in memory, but gives the same factor
        (SCALE_BODY,
         "    chosen = list(islice(batches, n_batches))\n"
         "    if len(chosen) < n_batches:\n"
         "        raise ValueError(f'{len(chosen)} batches, not {n_batches}')\n"
         "    if len({b.shape[-1] for b in chosen}) != 1:\n"
         "        raise ValueError('the batches differ in width')\n"
         "    acts = torch.cat(chosen)\n"
         "    return math.sqrt(acts.shape[-1]) / acts.norm(dim=-1).mean()\n"),
        ("    for batch in islice(batches, n_batches):\n",
         "    it = iter(batches)\n    for _ in range(n_batches):\n"
         "        batch = next(it, None)\n        if batch is None:\n            break\n"),
        ("total = total + batch.norm(dim=-1).sum()",
         "total = total + torch.linalg.vector_norm(batch, ord=2, dim=1).sum()"),
        ("count += batch.shape[0]", "count += batch.numel() // d"),
    ],
    "residual_norm_profile": [
        ("    norms = resid.norm(dim=-1).mean(dim=1)\n"
         "    bos_ratio = norms[:, 0] / norms[:, 1:].mean(dim=1)\n",
         "    norms = resid.pow(2).sum(-1).sqrt().mean(1)\n"
         "    others = norms[:, 1:].sum(dim=1) / (norms.shape[1] - 1)\n"
         "    bos_ratio = norms[:, 0] / others\n"),
        ("    if resid.shape[2] < 2:\n", "    if resid.shape[-2] == 1:\n"),
        ("    return norms, bos_ratio\n",
         "    return acts_lib.ResidualNorms(norms=norms, bos_ratio=bos_ratio)\n"),
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
