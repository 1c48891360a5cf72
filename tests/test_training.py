"""train_sae under bad data and crashes: non-finite values stop it naming the step and are
never checkpointed; short data keeps the work done; leftovers go on resume; checkpoints stay
the same size however many snapshots there are; state.json stays inside its folder."""

from __future__ import annotations

import json

import pytest
import torch

from sae_course.sae import SAE, SAEConfig
from sae_course.settings import cpu_threads
from sae_course.training import TrainConfig, TrainingDiverged, save_checkpoint, train_sae

CFG = SAEConfig(d_in=8, d_sae=16, architecture="relu", sparsity_coefficient=0.1)


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


def data(step: int) -> torch.Tensor:
    return torch.randn(32, 8, generator=torch.Generator().manual_seed(step))


def tc(**kw) -> TrainConfig:
    return TrainConfig(**{"n_steps": 6, "lr": 1e-2, "progress": False, "log_every": 1, **kw})


def test_an_inf_in_a_batch_stops_before_the_sae_changes(tmp_path):
    def bad(step):
        x = data(step)
        if step == 4:
            x[3, 2] = float("inf")
        return x

    sae = SAE(CFG, seed=0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        train_sae(sae, bad, tc(checkpoint_every=2), checkpoint_dir=tmp_path)
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 4
    assert all(torch.isfinite(p).all() for p in sae.parameters())


def test_a_diverging_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    def exploding(step):
        return data(step) * (1e30 if step >= 3 else 1.0)

    sae = SAE(CFG, seed=0)
    with pytest.raises(TrainingDiverged, match=r"at step 3 .*Fix: lower the learning rate"):
        train_sae(sae, exploding, tc(checkpoint_every=1, init_b_dec=None),
                  checkpoint_dir=tmp_path)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["step"] == 3
    assert all(torch.isfinite(p).all() for p in sae.parameters())


def test_a_non_finite_state_is_never_checkpointed(tmp_path):
    sae = SAE(CFG, seed=0)
    result = train_sae(sae, data, tc(n_steps=2), checkpoint_dir=tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with torch.no_grad():
        sae.W_enc[0, 0] = float("nan")
    opt = torch.optim.Adam(sae.parameters())
    with pytest.raises(TrainingDiverged, match=r"Not checkpointing step 3: sae.W_enc"):
        save_checkpoint(tmp_path, sae, opt, torch.Generator(), result, tc(n_steps=2), 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_short_data_stops_clearly_and_keeps_the_steps_done(tmp_path):
    batches = [data(i) for i in range(4)]
    with pytest.raises(ValueError, match=r"ran out after 4 batches, but n_steps=6.*checkpoint "
                                         r"of step 4.*Fix"):
        train_sae(SAE(CFG, seed=0), batches, tc(), checkpoint_dir=tmp_path)
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 4
    resumed = SAE(CFG, seed=0)  # more data later: the run goes on from step 4
    train_sae(resumed, [data(i) for i in range(6)], tc(), checkpoint_dir=tmp_path)
    clean = SAE(CFG, seed=0)
    train_sae(clean, [data(i) for i in range(6)], tc())
    for p, q in zip(clean.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q)


def test_resume_removes_what_interrupted_writes_left(tmp_path):
    train_sae(SAE(CFG, seed=0), data, tc(n_steps=4, checkpoint_every=2),
              checkpoint_dir=tmp_path)
    (tmp_path / ".checkpoint_00000006.safetensors.abc123.tmp").write_bytes(b"x" * 1000)
    (tmp_path / "checkpoint_00000001.safetensors").write_bytes(b"stale")
    train_sae(SAE(CFG, seed=0), data, tc(n_steps=6, checkpoint_every=2), resume=False,
              checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_00000006.safetensors",
                                                          "state.json"]


def test_checkpoint_size_does_not_grow_with_the_snapshots(tmp_path):
    cfg = tc(n_steps=40, snapshot_every=2, checkpoint_every=10, log_every=10)
    sizes = []

    def spy(step):
        files = list(tmp_path.glob("checkpoint_*.safetensors"))
        if files:
            sizes.append(files[0].stat().st_size)
        return data(step)

    result = train_sae(SAE(CFG, seed=0), spy, cfg, checkpoint_dir=tmp_path)
    assert len(set(sizes)) == 1 and len(result.snapshots) == 21
    assert len(list(tmp_path.glob("snapshot_*.safetensors"))) == 21
    resumed = train_sae(SAE(CFG, seed=0), data, cfg, checkpoint_dir=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(resumed.snapshots, result.snapshots,
                                                 strict=True))


def test_state_json_cannot_point_outside_its_folder(tmp_path):
    train_sae(SAE(CFG, seed=0), data, tc(n_steps=2), checkpoint_dir=tmp_path / "c")
    state = json.loads((tmp_path / "c" / "state.json").read_text())
    state["tensors"] = "../elsewhere/checkpoint_00000002.safetensors"
    (tmp_path / "c" / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match=r"points at '../elsewhere.*not a checkpoint file in "
                                         r"its own folder.*Fix"):
        train_sae(SAE(CFG, seed=0), data, tc(n_steps=4), checkpoint_dir=tmp_path / "c")


def test_starting_over_in_a_used_folder_writes_its_own_snapshots(tmp_path):
    cfg = tc(n_steps=4, snapshot_every=2, checkpoint_every=2)
    train_sae(SAE(CFG, seed=0), data, cfg, checkpoint_dir=tmp_path)
    fresh = train_sae(SAE(CFG, seed=5), data, cfg, checkpoint_dir=tmp_path, resume=False)
    resumed = train_sae(SAE(CFG, seed=5), data, cfg, checkpoint_dir=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(resumed.snapshots, fresh.snapshots,
                                                 strict=True))
