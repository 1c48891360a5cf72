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
    # residual_stream
    Mutant("residual_stream", "resid_post_everywhere",
           old='f"blocks.{layer}.hook_resid_pre" for layer',
           new='f"blocks.{layer}.hook_resid_post" for layer'),
    Mutant("residual_stream", "final_resid_post_missing",
           old=' + [f"blocks.{n - 1}.hook_resid_post"]', new=""),
    Mutant("residual_stream", "resid_mid_instead_of_pre",
           old='f"blocks.{layer}.hook_resid_pre" for layer',
           new='f"blocks.{layer}.hook_resid_mid" for layer'),
    # residual_norms
    Mutant("residual_norms", "squared_norm",
           old="resid.norm(dim=-1).mean(dim=1)", new="resid.pow(2).sum(dim=-1).mean(dim=1)"),
    Mutant("residual_norms", "norm_of_mean",
           old="resid.norm(dim=-1).mean(dim=1)", new="resid.mean(dim=1).norm(dim=-1)"),
    Mutant("residual_norms", "mean_over_positions",
           old="resid.norm(dim=-1).mean(dim=1)", new="resid.norm(dim=-1).mean(dim=2)"),
    # stop_early_activations
    Mutant("stop_early_activations", "never_stops",
           old="        raise StopForward\n", new="        return None\n"),
    Mutant("stop_early_activations", "raises_before_storing",
           old='        storage["acts"] = acts.detach()\n        raise StopForward\n',
           new='        raise StopForward\n        storage["acts"] = acts.detach()\n'),
    Mutant("stop_early_activations", "exception_not_caught",
           old="    except StopForward:\n        pass\n", new="    finally:\n        pass\n"),
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
    # flatten_activations
    Mutant("flatten_activations", "drops_last_position",
           old="acts = acts[:, 1:]", new="acts = acts[:, :-1]"),
    Mutant("flatten_activations", "position_major_order",
           old="return acts.reshape(-1, acts.shape[-1])",
           new="return acts.transpose(0, 1).reshape(-1, acts.shape[-1])"),
    Mutant("flatten_activations", "drops_first_context",
           old="acts = acts[:, 1:]", new="acts = acts[1:]"),
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
    # norm_scale_factor
    Mutant("norm_scale_factor", "d_instead_of_sqrt_d",
           old="math.sqrt(acts.shape[-1])", new="acts.shape[-1]"),
    Mutant("norm_scale_factor", "inverted",
           old="return math.sqrt(acts.shape[-1]) / acts.norm(dim=-1).mean()",
           new="return acts.norm(dim=-1).mean() / math.sqrt(acts.shape[-1])"),
    Mutant("norm_scale_factor", "rms_norm",
           old="acts.norm(dim=-1).mean()", new="acts.norm(dim=-1).pow(2).mean().sqrt()"),
]
