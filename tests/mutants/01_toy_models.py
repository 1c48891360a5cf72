"""Mistakes learners make in notebook 01 (toy models of superposition)."""

from tests.mutants import Mutant

_FWD_IN = '"inst hid feat, batch inst feat -> batch inst hid"'
_OVERLAP = 'einops.einsum(W_hat, W, "inst hid i, inst hid j -> inst i j")'

MUTANTS = [
    # --- ToyModel.forward
    Mutant("toy_model_forward", "missing_relu",
           old="return torch.relu(out + self.b_final)", new="return out + self.b_final"),
    Mutant("toy_model_forward", "forgotten_bias",
           old="torch.relu(out + self.b_final)", new="torch.relu(out)"),
    Mutant("toy_model_forward", "transposed_weight_in", old=_FWD_IN,
           new='"inst feat hid, batch inst feat -> batch inst hid"'),
    Mutant("toy_model_forward", "hidden_relu",
           old="hidden = einops.einsum(self.W, features, " + _FWD_IN + ")",
           new="hidden = torch.relu(einops.einsum(self.W, features, " + _FWD_IN + "))"),
    Mutant("toy_model_forward", "relu_before_bias",
           old="return torch.relu(out + self.b_final)",
           new="return torch.relu(out) + self.b_final"),
    # --- generate_batch
    Mutant("generate_batch", "mask_not_applied", old="return values * mask", new="return values"),
    Mutant("generate_batch", "mask_inverted",
           old="< feature_probability", new="> feature_probability"),
    Mutant("generate_batch", "same_draw_for_mask",
           old="mask = torch.rand(shape, generator=generator) < feature_probability",
           new="mask = values < feature_probability"),
    Mutant("generate_batch", "gaussian_values",
           old="values = torch.rand(shape", new="values = torch.randn(shape"),
    Mutant("generate_batch", "one_mask_per_example",
           old="mask = torch.rand(shape, generator=generator)",
           new="mask = torch.rand((n_batch, *feature_probability.shape[:-1], 1), "
               "generator=generator)"),
    Mutant("generate_batch", "mask_drawn_first",
           old="values = torch.rand(shape, generator=generator)\n"
               "    mask = torch.rand(shape, generator=generator) < feature_probability",
           new="mask = torch.rand(shape, generator=generator) < feature_probability\n"
               "    values = torch.rand(shape, generator=generator)"),
    Mutant("generate_batch", "no_generator",
           old="values = torch.rand(shape, generator=generator)",
           new="values = torch.rand(shape)"),
    # --- importance_weighted_loss
    Mutant("importance_weighted_loss", "importance_not_applied",
           old="weighted = importance * squared_error", new="weighted = squared_error"),
    Mutant("importance_weighted_loss", "mean_over_features",
           old="weighted.mean(dim=0).sum()", new="weighted.mean(dim=0).mean(dim=-1).sum()"),
    Mutant("importance_weighted_loss", "mean_over_everything",
           old="weighted.mean(dim=0).sum()", new="weighted.mean()"),
    Mutant("importance_weighted_loss", "not_squared",
           old="(features - out) ** 2", new="(features - out).abs()"),
    Mutant("importance_weighted_loss", "per_instance_not_reduced",
           old="weighted.mean(dim=0).sum()", new="weighted.mean(dim=0).sum(dim=-1)"),
    # --- train
    Mutant("train", "no_zero_grad", old="        optimizer.zero_grad()\n", new=""),
    Mutant("train", "sgd_instead_of_adam", old="torch.optim.Adam(", new="torch.optim.SGD("),
    Mutant("train", "lr_ignored", old="lr=lr)", new="lr=1e-3)"),
    Mutant("train", "no_step", old="optimizer.step()", new="pass"),
    Mutant("train", "one_batch_for_all_steps",
           old="for _ in range(n_steps):\n        batch = make_batch()",
           new="batch = make_batch()\n    for _ in range(n_steps):"),
    Mutant("train", "no_backward", old="loss.backward()", new="loss.detach()"),
    # --- norms_and_interference
    Mutant("norms_and_interference", "own_term_included",
           old="(overlaps * (1 - own))", new="overlaps"),
    Mutant("norms_and_interference", "not_normalised",
           old="W_hat = W / norms.clamp_min(1e-8).unsqueeze(1)", new="W_hat = W"),
    Mutant("norms_and_interference", "not_squared",
           old=_OVERLAP + " ** 2", new=_OVERLAP),
    Mutant("norms_and_interference", "norm_over_wrong_axis",
           old="norms = W.norm(dim=1)", new="norms = W.norm(dim=-1)"),
    Mutant("norms_and_interference", "squared_norms_returned",
           old="return norms, interference", new="return norms**2, interference"),
    Mutant("norms_and_interference", "no_clamp",
           old="W_hat = W / norms.clamp_min(1e-8).unsqueeze(1)",
           new="W_hat = W / norms.unsqueeze(1)"),
    # --- feature_dimensionality
    Mutant("feature_dimensionality", "W_instead_of_W_hat",
           old="W_hat = W / norms.clamp_min(1e-8).unsqueeze(1)", new="W_hat = W"),
    Mutant("feature_dimensionality", "dot_products_not_squared",
           old="(overlaps**2).sum(dim=-1)", new="overlaps.sum(dim=-1)"),
    Mutant("feature_dimensionality", "numerator_not_squared",
           old="return norms**2 /", new="return norms /"),
    Mutant("feature_dimensionality", "sum_over_wrong_index",
           old="(overlaps**2).sum(dim=-1)", new="(overlaps**2).sum(dim=-2)"),
    Mutant("feature_dimensionality", "no_clamp",
           old="W_hat = W / norms.clamp_min(1e-8).unsqueeze(1)",
           new="W_hat = W / norms.unsqueeze(1)"),
    # --- generate_anticorrelated_batch
    Mutant("generate_anticorrelated_batch", "p_instead_of_2p",
           old="< 2 * feature_probability", new="< feature_probability"),
    Mutant("generate_anticorrelated_batch", "pairs_not_interleaved",
           old="torch.stack([pair_active & first, pair_active & ~first], dim=-1).flatten(-2)",
           new="torch.cat([pair_active & first, pair_active & ~first], dim=-1)"),
    Mutant("generate_anticorrelated_batch", "both_can_be_present",
           old="pair_active & ~first]", new="pair_active & (torch.rand(first.shape, "
               "generator=generator) < 0.5)]"),
    Mutant("generate_anticorrelated_batch", "mask_not_applied",
           old="return values * mask", new="return values"),
    Mutant("generate_anticorrelated_batch", "coin_drawn_before_activity",
           old="pair_active = torch.rand((n_batch, n_inst, n_pairs), generator=generator) "
               "< 2 * feature_probability\n"
               "    first = torch.rand((n_batch, n_inst, n_pairs), generator=generator) < 0.5",
           new="first = torch.rand((n_batch, n_inst, n_pairs), generator=generator) < 0.5\n"
               "    pair_active = torch.rand((n_batch, n_inst, n_pairs), generator=generator) "
               "< 2 * feature_probability"),
    # --- NeuronModel.forward
    Mutant("neuron_model_forward", "missing_hidden_relu",
           old="hidden = torch.relu(einops.einsum(self.W, features, " + _FWD_IN + "))",
           new="hidden = einops.einsum(self.W, features, " + _FWD_IN + ")"),
    Mutant("neuron_model_forward", "missing_output_relu",
           old="return torch.relu(out + self.b_final)", new="return out + self.b_final"),
    Mutant("neuron_model_forward", "forgotten_bias",
           old="torch.relu(out + self.b_final)", new="torch.relu(out)"),
    Mutant("neuron_model_forward", "transposed_weight_in", old=_FWD_IN,
           new='"inst feat hid, batch inst feat -> batch inst hid"'),
]
