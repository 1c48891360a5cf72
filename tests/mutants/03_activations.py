from tests.mutants import Mutant

MUTANTS = [
    # capture_activations
    Mutant("capture_activations", "keyed_by_hook_dot_name",
           old='storage[name] = acts.detach()', new='storage[hook.name] = acts.detach()'),
    Mutant("capture_activations", "lambda_in_loop_late_binding",
           old="(name, make_hook(name)) for name in hook_names",
           new="(name, lambda acts, hook: storage.__setitem__(name, acts.detach())) "
               "for name in hook_names"),
    Mutant("capture_activations", "first_batch_item_only",
           old='storage[name] = acts.detach()', new='storage[name] = acts[0].detach()'),
    # hooks: a hook left on the model (it would run in every later forward pass)
    Mutant("capture_activations", "add_hook_left_behind",
           old="    model.run_with_hooks(tokens, fwd_hooks=[(name, make_hook(name)) for name in "
               "hook_names])\n",
           new="    for name in hook_names:\n        model.add_hook(name, make_hook(name))\n"
               "    model(tokens)\n"),
    # hooks: more forward passes than needed
    Mutant("capture_activations", "one_forward_pass_per_hook",
           old="    model.run_with_hooks(tokens, fwd_hooks=[(name, make_hook(name)) for name in "
               "hook_names])\n",
           new="    for name in hook_names:\n"
               "        model.run_with_hooks(tokens, fwd_hooks=[(name, make_hook(name))])\n"),
    # inputs mutated in place: the caller's list of hook names sorted
    Mutant("capture_activations", "sorts_the_hook_names_in_place",
           old="    model.run_with_hooks(tokens, fwd_hooks=[(name, make_hook(name)) for name in "
               "hook_names])\n",
           new="    hook_names.sort()\n"
               "    model.run_with_hooks(tokens, fwd_hooks=[(name, make_hook(name)) for name in "
               "hook_names])\n"),
    # residual_stream
    Mutant("residual_stream", "resid_post_everywhere",
           old='f"blocks.{layer}.hook_resid_pre" for layer',
           new='f"blocks.{layer}.hook_resid_post" for layer'),
    Mutant("residual_stream", "final_resid_post_missing",
           old=' + [f"blocks.{n - 1}.hook_resid_post"]', new=""),
    Mutant("residual_stream", "resid_mid_instead_of_pre",
           old='f"blocks.{layer}.hook_resid_pre" for layer',
           new='f"blocks.{layer}.hook_resid_mid" for layer'),
    # hooks: one forward pass per snapshot
    Mutant("residual_stream", "one_forward_pass_per_layer",
           old="    _, cache = model.run_with_cache(tokens, names_filter=names)\n"
               "    return torch.stack([cache[name] for name in names])\n",
           new="    return torch.stack([model.run_with_cache(tokens, names_filter=[name])[1][name] "
               "for name in names])\n"),
    # inputs mutated in place: next-token targets built in the caller's tokens after the run
    Mutant("residual_stream", "shifts_the_tokens_in_place",
           old="    _, cache = model.run_with_cache(tokens, names_filter=names)\n",
           new="    _, cache = model.run_with_cache(tokens, names_filter=names)\n"
               "    tokens[:, :-1] = tokens[:, 1:].clone()\n"),
    # residual_norm_profile: the norms
    Mutant("residual_norm_profile", "squared_norm",
           old="resid.norm(dim=-1).mean(dim=1)", new="resid.pow(2).sum(dim=-1).mean(dim=1)"),
    Mutant("residual_norm_profile", "norm_of_mean",
           old="resid.norm(dim=-1).mean(dim=1)", new="resid.mean(dim=1).norm(dim=-1)"),
    Mutant("residual_norm_profile", "mean_over_positions",
           old="resid.norm(dim=-1).mean(dim=1)", new="resid.norm(dim=-1).mean(dim=2)"),
    # inputs mutated in place
    Mutant("residual_norm_profile", "squares_the_input_in_place",
           old="norms = resid.norm(dim=-1).mean(dim=1)",
           new="norms = resid.pow_(2).sum(dim=-1).sqrt().mean(dim=1)"),
    # dtype not kept
    Mutant("residual_norm_profile", "casts_to_float32",
           old="norms = resid.norm(dim=-1).mean(dim=1)",
           new="norms = resid.float().norm(dim=-1).mean(dim=1)"),
    # residual_norm_profile: the BOS ratio
    Mutant("residual_norm_profile", "bos_included_in_others",
           old="norms[:, 0] / norms[:, 1:].mean(dim=1)", new="norms[:, 0] / norms.mean(dim=1)"),
    Mutant("residual_norm_profile", "ratio_inverted",
           old="norms[:, 0] / norms[:, 1:].mean(dim=1)",
           new="norms[:, 1:].mean(dim=1) / norms[:, 0]"),
    Mutant("residual_norm_profile", "ratio_per_context_then_averaged",
           old="    bos_ratio = norms[:, 0] / norms[:, 1:].mean(dim=1)\n",
           new="    per_context = resid.norm(dim=-1)\n"
               "    bos_ratio = (per_context[:, :, 0] / per_context[:, :, 1:].mean(dim=-1))"
               ".mean(dim=1)\n"),
    Mutant("residual_norm_profile", "difference_not_ratio",
           old="norms[:, 0] / norms[:, 1:].mean(dim=1)",
           new="norms[:, 0] - norms[:, 1:].mean(dim=1)"),
    Mutant("residual_norm_profile", "bos_taken_as_the_last_position",
           old="norms[:, 0] / norms[:, 1:].mean(dim=1)",
           new="norms[:, -1] / norms[:, :-1].mean(dim=1)"),
    # dtype not kept: the ratio rebuilt from Python floats (float32 for a float64 stream)
    Mutant("residual_norm_profile", "ratio_rebuilt_from_python_floats",
           old="    bos_ratio = norms[:, 0] / norms[:, 1:].mean(dim=1)\n",
           new="    bos_ratio = torch.tensor([float(row[0] / row[1:].mean()) for row in norms], "
               "device=resid.device)\n"),
    # the edge case: one position, no error (the ratio comes out NaN)
    Mutant("residual_norm_profile", "no_error_for_a_single_position",
           old="    if resid.shape[2] < 2:\n", new="    if False:\n"),
    # stop_early_activations
    Mutant("stop_early_activations", "never_stops",
           old="        raise StopForward\n", new="        return None\n"),
    Mutant("stop_early_activations", "raises_before_storing",
           old='        storage["acts"] = acts.detach()\n        raise StopForward\n',
           new='        raise StopForward\n        storage["acts"] = acts.detach()\n'),
    Mutant("stop_early_activations", "exception_not_caught",
           old="    except StopForward:\n        pass\n", new="    finally:\n        pass\n"),
    # hooks: a raising hook left on the model (every later forward pass would stop there)
    Mutant("stop_early_activations", "add_hook_left_behind",
           old="        model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook_fn)])\n",
           new="        model.add_hook(hook_name, hook_fn)\n        model(tokens)\n"),
    # hooks: a second forward pass "to be sure"
    Mutant("stop_early_activations", "runs_twice",
           old='    return storage["acts"]\n',
           new="    try:\n        model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook_fn)])\n"
               "    except StopForward:\n        pass\n    return storage[\"acts\"]\n"),
    # inputs mutated in place: the caller's tokens rolled into next-token targets afterwards
    Mutant("stop_early_activations", "rolls_the_tokens_in_place",
           old='    return storage["acts"]\n',
           new='    tokens.copy_(tokens.roll(-1, dims=1))\n    return storage["acts"]\n'),
    # an argument ignored: the hook name hard-coded as the check's first
    Mutant("stop_early_activations", "hook_name_hardcoded",
           old="fwd_hooks=[(hook_name, hook_fn)]",
           new='fwd_hooks=[("blocks.0.hook_resid_pre", hook_fn)]'),
    # pack_contexts
    Mutant("pack_contexts", "no_separator_between_documents",
           old="        stream.append(bos_id)\n", new=""),
    Mutant("pack_contexts", "pieces_of_context_len_then_bos",
           old="body = context_len - 1", new="body = context_len"),
    Mutant("pack_contexts", "bos_overwrites_first_token",
           old="return torch.cat([torch.full((n, 1), bos_id, dtype=torch.long), chunks], "
               "dim=1)",
           new="chunks = torch.tensor(stream[: len(stream) // context_len * context_len], "
               "dtype=torch.long).reshape(-1, context_len)\n    chunks[:, 0] = bos_id\n"
               "    return chunks"),
    Mutant("pack_contexts", "partial_piece_padded",
           old="n = len(stream) // body",
           new="n = -(-len(stream) // body)\n"
               "    stream = stream + [bos_id] * (n * body - len(stream))"),
    # an argument ignored: the separator hard-coded as GPT-2's <|endoftext|>
    Mutant("pack_contexts", "separator_hardcoded_50256",
           old="        stream.append(bos_id)\n", new="        stream.append(50256)\n"),
    Mutant("pack_contexts", "context_len_hardcoded",
           old="body = context_len - 1", new="body = 7"),
    # inputs mutated in place: the separator appended to the caller's documents
    Mutant("pack_contexts", "appends_to_the_input_documents",
           old="        stream.extend(doc)\n        stream.append(bos_id)\n",
           new="        doc.append(bos_id)\n        stream.extend(doc)\n"),
    # flatten_activations
    Mutant("flatten_activations", "drops_last_position",
           old="acts = acts[:, 1:]", new="acts = acts[:, :-1]"),
    Mutant("flatten_activations", "position_major_order",
           old="return acts.reshape(-1, acts.shape[-1])",
           new="return acts.transpose(0, 1).reshape(-1, acts.shape[-1])"),
    Mutant("flatten_activations", "drops_first_context",
           old="acts = acts[:, 1:]", new="acts = acts[1:]"),
    # dtype not kept
    Mutant("flatten_activations", "casts_to_float32",
           old="return acts.reshape(-1, acts.shape[-1])",
           new="return acts.reshape(-1, acts.shape[-1]).float()"),
    # inputs mutated in place: resize_ (in place) taken for reshape
    Mutant("flatten_activations", "resizes_the_input_in_place",
           old="return acts.reshape(-1, acts.shape[-1])",
           new="return acts.contiguous().resize_(acts.shape[0] * acts.shape[1], "
               "acts.shape[-1])"),
    # an argument ignored: BOS always dropped (or never)
    Mutant("flatten_activations", "exclude_bos_ignored_always_drops",
           old="    if exclude_bos:\n", new="    if True:\n"),
    Mutant("flatten_activations", "exclude_bos_ignored_never_drops",
           old="    if exclude_bos:\n", new="    if False:\n"),
    # refill_and_split
    Mutant("refill_and_split", "no_shuffle",
           old="    pool = pool[torch.randperm(len(pool), generator=generator)]\n", new=""),
    Mutant("refill_and_split", "global_rng_not_generator",
           old="torch.randperm(len(pool), generator=generator)", new="torch.randperm(len(pool))"),
    Mutant("refill_and_split", "serves_whole_pool",
           old="n_batches = (len(pool) // 2) // batch_size",
           new="n_batches = len(pool) // batch_size"),
    Mutant("refill_and_split", "shuffles_only_new",
           old="    pool = torch.cat([buffer, new])\n"
               "    pool = pool[torch.randperm(len(pool), generator=generator)]\n",
           new="    pool = torch.cat([buffer, "
               "new[torch.randperm(len(new), generator=generator)]])\n"),
    # dtype not kept
    Mutant("refill_and_split", "pool_cast_to_float32",
           old="    pool = torch.cat([buffer, new])\n",
           new="    pool = torch.cat([buffer, new]).float()\n"),
    # inputs mutated in place: the caller's new activations reordered in place
    Mutant("refill_and_split", "shuffles_new_in_place",
           old="    pool = torch.cat([buffer, new])\n",
           new="    new[:] = new.flip(0)\n    pool = torch.cat([buffer, new.flip(0)])\n"),
    # an argument ignored: batch_size hard-coded as the check's first
    Mutant("refill_and_split", "batch_size_hardcoded",
           old="    n_batches = (len(pool) // 2) // batch_size\n",
           new="    batch_size = 8\n    n_batches = (len(pool) // 2) // batch_size\n"),
    # estimate_norm_scale_factor: the factor itself (ported from norm_scale_factor)
    Mutant("estimate_norm_scale_factor", "d_instead_of_sqrt_d",
           old="return math.sqrt(d) / (total / count)", new="return d / (total / count)"),
    Mutant("estimate_norm_scale_factor", "inverted",
           old="return math.sqrt(d) / (total / count)",
           new="return (total / count) / math.sqrt(d)"),
    Mutant("estimate_norm_scale_factor", "rms_norm",
           old="""        total = total + batch.norm(dim=-1).sum()
        count += batch.shape[0]
        seen += 1
    if seen < n_batches:
        raise ValueError(f"asked for {n_batches} batches, only {seen} came")
    return math.sqrt(d) / (total / count)
""",
           new="""        total = total + batch.norm(dim=-1).pow(2).sum()
        count += batch.shape[0]
        seen += 1
    if seen < n_batches:
        raise ValueError(f"asked for {n_batches} batches, only {seen} came")
    return math.sqrt(d) / (total / count).sqrt()
"""),
    Mutant("estimate_norm_scale_factor", "mean_absolute_component",
           old="total = total + batch.norm(dim=-1).sum()",
           new="total = total + batch.abs().mean(dim=-1).sum()"),
    # dtype/type not kept: a Python float instead of a tensor
    Mutant("estimate_norm_scale_factor", "returns_a_python_float",
           old="return math.sqrt(d) / (total / count)",
           new="return math.sqrt(d) / float(total / count)"),
    # dtype not kept: the norms taken in float32 (a float64 stream gives a float32 factor)
    Mutant("estimate_norm_scale_factor", "casts_to_float32",
           old="total = total + batch.norm(dim=-1).sum()",
           new="total = total + batch.float().norm(dim=-1).sum()"),
    # dtype not kept: the result rebuilt with torch.tensor (float32 whatever the input)
    Mutant("estimate_norm_scale_factor", "rebuilt_with_torch_tensor",
           old="return math.sqrt(d) / (total / count)",
           new="return torch.tensor(math.sqrt(d) * count / float(total))"),
    # inputs mutated in place: each batch normalised as it goes by
    Mutant("estimate_norm_scale_factor", "scales_the_batches_in_place",
           old="        total = total + batch.norm(dim=-1).sum()\n",
           new="        total = total + batch.norm(dim=-1).sum()\n"
               "        batch.mul_(math.sqrt(d) / batch.norm(dim=-1).mean())\n"),
    # the stream: which batches, and how many
    Mutant("estimate_norm_scale_factor", "only_the_first_batch",
           old="    total, count, seen, d = 0.0, 0, 0, None\n",
           new="    first = next(iter(batches))\n"
               "    return math.sqrt(first.shape[-1]) / first.norm(dim=-1).mean()\n"
               "    total, count, seen, d = 0.0, 0, 0, None\n"),
    Mutant("estimate_norm_scale_factor", "running_sum_overwritten",
           old="total = total + batch.norm(dim=-1).sum()", new="total = batch.norm(dim=-1).sum()"),
    Mutant("estimate_norm_scale_factor", "n_batches_ignored",
           old="for batch in islice(batches, n_batches):", new="for batch in batches:"),
    Mutant("estimate_norm_scale_factor", "n_batches_hardcoded",
           old="islice(batches, n_batches)", new="islice(batches, 3)"),
    Mutant("estimate_norm_scale_factor", "draws_one_batch_too_many",
           old="    for batch in islice(batches, n_batches):\n",
           new="    for i, batch in enumerate(batches):\n        if i == n_batches:\n"
               "            break\n"),
    Mutant("estimate_norm_scale_factor", "indexes_the_batches_as_a_list",
           old="for batch in islice(batches, n_batches):",
           new="for batch in batches[:n_batches]:"),
    Mutant("estimate_norm_scale_factor", "mean_of_batch_means",
           old="        total = total + batch.norm(dim=-1).sum()\n"
               "        count += batch.shape[0]\n",
           new="        total = total + batch.norm(dim=-1).mean()\n        count += 1\n"),
    Mutant("estimate_norm_scale_factor", "counts_batches_not_tokens",
           old="count += batch.shape[0]", new="count += 1"),
    # the errors
    Mutant("estimate_norm_scale_factor", "no_error_when_too_few_batches",
           old="    if seen < n_batches:\n", new="    if False:\n"),
    Mutant("estimate_norm_scale_factor", "no_check_of_the_width",
           old="        elif batch.shape[-1] != d:\n", new="        elif False:\n"),
]
