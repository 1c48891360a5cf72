"""Part 02's figures (sae_course.plotting) and decoder scrubber (sae_course.widgets) on tiny
inputs: each returns a Figure with the expected axes and lines; the slider redraws."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from sae_course import plotting, widgets
from sae_course.training import TrainResult

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _features(n: int = 4, d: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _snapshots(features: torch.Tensor, n: int = 3) -> list[torch.Tensor]:
    """Decoders [2 * n_features, d] moving from noise to the features (and their negatives)."""
    noise = _features(2 * features.shape[0], features.shape[1], seed=1)
    target = torch.cat([features, -features])
    return [(1 - t) * noise + t * target for t in torch.linspace(0, 1, n).tolist()]


def test_best_cosines_one_line_per_sae_plus_markers():
    features = _features()
    decoders = {"exact": torch.cat([features, _features(2, seed=3)]), "noise": _features(6)}
    fig = plotting.plot_best_cosines(features, decoders, n_represented=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.lines) == 2 + 2  # the SAEs, the "not represented" line, the threshold
    exact = ax.lines[0].get_ydata()
    assert exact == pytest.approx([1.0] * 4)  # every feature is a decoder row
    assert ax.get_legend() is not None
    assert len(plotting.plot_best_cosines(features, decoders).axes[0].lines) == 3


def test_frontier_two_panels_one_line_per_architecture():
    def point(l0, ev, mmcs):
        return {"l0": l0, "explained_variance": ev, "mmcs": mmcs}

    frontier = {
        "ReLU + L1": [point(2.0, 0.5, 0.6), point(4.0, 0.7, 0.8)],
        "TopK": [point(2.0, 0.6, 0.7), point(4.0, 0.8, 0.9), point(8.0, 0.9, 0.95)],
    }
    fig = plotting.plot_frontier(frontier, true_l0=2.5, n_features=64)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.lines) == 2 + 1  # the architectures and the true L0
    assert list(fig.axes[0].lines[1].get_xdata()) == [2.0, 4.0, 8.0]
    assert list(fig.axes[1].lines[1].get_ydata()) == [0.7, 0.9, 0.95]
    assert "64 known features" in fig._suptitle.get_text()
    assert "2.5" in fig._suptitle.get_text()
    assert all(len(ax.lines) == 2 for ax in plotting.plot_frontier(frontier).axes)
    # one legend for both panels, and no wider than JupyterLab's notebook (~950 px at dpi 100)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ReLU + L1", "TopK"]
    assert fig.get_size_inches()[0] <= 9.5


def test_dead_latents_one_line_per_run():
    def run(values):
        return TrainResult(history=[{"step": i, "dead_fraction": v} for i, v in enumerate(values)])

    fig = plotting.plot_dead_latents({"no resampling": run([0.0, 0.2, 0.3]),
                                      "resampling": run([0.0, 0.1])})
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    lines = fig.axes[0].lines
    assert len(lines) == 2
    assert list(lines[0].get_ydata()) == [0.0, 0.2, 0.3]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "no resampling", "resampling"]


def test_decoder_snapshot_heatmap_and_bars():
    features = _features()
    W = _snapshots(features)[-1]
    fig = plotting.plot_decoder_snapshot(features, W, step=40)
    assert isinstance(fig, Figure) and len(fig.axes) == 3  # heat map, bars, colour bar
    heat, bars, colorbar = fig.axes
    assert colorbar.get_ylabel() == "cosine"
    assert heat.images[0].get_cmap().name == plotting.SIGNED_CMAP
    assert len(heat.images) == 1 and heat.images[0].get_array().shape == (4, 8)
    assert len(bars.patches) == 4 and len(bars.lines) == 1  # one bar per feature, threshold
    assert bars.get_title() == "step 40: MMCS 1.000, recovered 4/4"
    assert fig.get_size_inches()[0] <= 9.5  # fits JupyterLab's notebook width at dpi 100
    # rows grouped by the feature each matches best: that feature never decreases along them
    order = plotting.decoder_row_order(features, W)
    assert sorted(order.tolist()) == list(range(8))
    best_feature = (features @ W.T).div(W.norm(dim=-1)).argmax(0)[order]
    assert (best_feature[1:] >= best_feature[:-1]).all()


def test_scrubber_builds_headless_and_redraws_on_slider_change():
    features = _features()
    snaps = _snapshots(features, n=4)
    scrubber = widgets.decoder_scrubber(snaps, features, steps=[0, 10, 20, 30])
    slider = scrubber.slider
    assert (slider.min, slider.max, slider.value) == (0, 3, 3)  # starts at the last snapshot
    assert scrubber.figure(0).axes[1].get_title().startswith("step 0: ")
    drawn = []
    figure = scrubber.figure
    scrubber.figure = lambda i: drawn.append(i) or figure(i)
    slider.value = 1  # each change redraws
    slider.value = 0
    assert drawn == [1, 0]
    # the rows keep the final snapshot's order in every frame
    assert torch.equal(scrubber.row_order, plotting.decoder_row_order(features, snaps[-1]))


def test_scrubber_rejects_bad_input():
    features = _features()
    with pytest.raises(ValueError, match="snapshot_every"):
        widgets.DecoderScrubber([], features)
    with pytest.raises(ValueError, match="snapshot_steps"):
        widgets.DecoderScrubber(_snapshots(features), features, steps=[0])
    with pytest.raises(ValueError, match="input space"):
        widgets.DecoderScrubber(_snapshots(features), _features(4, 5))
