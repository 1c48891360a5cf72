"""train_sae's callback and the live training monitor (Part 04)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from sae_course import plotting, widgets
from sae_course.sae import SAE, SAEConfig
from sae_course.training import TrainConfig, train_sae


def _data(step: int) -> torch.Tensor:
    return torch.randn(64, 8, generator=torch.Generator().manual_seed(step))


def _sae() -> SAE:
    return SAE(SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2), seed=0)


def test_callback_gets_every_log_entry_as_it_is_made():
    seen = []
    cfg = TrainConfig(n_steps=25, log_every=10, progress=False)
    result = train_sae(_sae(), _data, cfg, callback=lambda v: seen.append(dict(v)))
    assert [v["step"] for v in seen] == [10, 20, 25]
    assert seen == result.history


def test_callback_changes_nothing_in_training():
    cfg = TrainConfig(n_steps=12, log_every=3, progress=False)
    a, b = _sae(), _sae()
    train_sae(a, _data, cfg)
    train_sae(b, _data, cfg, callback=lambda v: None)
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), name


def test_interrupted_by_the_callback_then_resumed_replays_and_matches(tmp_path):
    cfg = TrainConfig(n_steps=20, log_every=2, checkpoint_every=5, progress=False)
    clean = _sae()
    train_sae(clean, _data, cfg)

    def interrupt(values):
        if values["step"] == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sae(_sae(), _data, cfg, checkpoint_dir=tmp_path, callback=interrupt)
    resumed, seen = _sae(), []
    train_sae(resumed, _data, cfg, checkpoint_dir=tmp_path, callback=lambda v: seen.append(v))
    assert [v["step"] for v in seen] == list(range(2, 21, 2))  # 2-10 replayed, then 12-20
    for name, value in clean.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[name]), name


def test_monitor_records_summarises_and_draws_in_place():
    monitor = widgets.TrainingMonitor(n_steps=30, title="demo", min_interval_s=3600)
    result = train_sae(_sae(), _data, TrainConfig(n_steps=30, log_every=5, progress=False),
                       callback=monitor)
    assert monitor.history == result.history
    assert monitor.redraws == 1  # the first entry draws; the rest fall inside the interval
    assert "step 30/30" in monitor.summary.value and "L0" in monitor.summary.value
    monitor.close()
    assert monitor.redraws == 2
    fig = monitor.figure()
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == list(plotting.TRAINING_PANELS)
    total = fig.axes[0].lines[0]
    assert list(total.get_xdata()) == [5, 10, 15, 20, 25, 30]
    assert list(total.get_ydata()) == pytest.approx(result.series("loss"))


def test_monitor_redraws_when_the_interval_has_passed():
    monitor = widgets.TrainingMonitor(min_interval_s=0)
    for step in (1, 2, 3):
        monitor({"step": step, "loss": 1.0, "loss_mse": 1.0, "l0": 2.0,
                 "explained_variance": 0.5, "dead_fraction": 0.0})
    assert monitor.redraws == 3


def test_monitor_refuses_entries_that_are_not_a_training_log():
    with pytest.raises(ValueError, match="callback=monitor"):
        widgets.TrainingMonitor()({"loss": 1.0})


def test_training_curves_one_row_per_run_with_notes():
    history = [{"step": s, "loss": 1.0 / s, "loss_mse": 1.0 / s, "l0": 3.0,
                "explained_variance": 0.9, "dead_fraction": 0.1} for s in (1, 2)]
    fig = plotting.plot_training_curves({"a": history, "b": history}, notes={"b": "CE gap 1"})
    assert len(fig.axes) == 10  # 4 panels and a column of notes, per run
    assert fig.axes[5].get_ylabel() == "b"
    assert [t.get_text() for t in fig.axes[9].texts] == ["CE gap 1"]
    assert [t.get_text() for t in fig.axes[4].texts] == [""]
    single = plotting.plot_training_curves({"only": history})
    assert len(single.axes) == 4 and single.texts[0].get_text() == "only"
