"""Interactive explorers (ipywidgets) for the course notebooks: Part 01's toy-model explorer,
Part 02's decoder scrubber and Part 04's live training monitor.

They only display: run headless (nbval, nbconvert) they build their widgets and draw their
first state without failing; in Jupyter or Colab the sliders redraw the plots in place.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from IPython.display import clear_output, display
from matplotlib.figure import Figure
from torch import Tensor

from sae_course import plotting
from sae_course import toy_models as tm


def pretrain_explorer_model(
    probabilities: Sequence[float],
    decays: Sequence[float],
    *,
    n_features: int = 5,
    d_hidden: int = 2,
    n_steps: int = 2000,
    batch_size: int = 1024,
    lr: float = 1e-2,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tm.ToyModel:
    """One batched toy model with an instance for every (feature probability, importance
    decay) pair: instance `i * len(decays) + j` has probability `probabilities[i]` and
    importance `decays[j] ** feature_index`."""
    probs = torch.as_tensor(list(probabilities), dtype=torch.float32)
    dec = torch.as_tensor(list(decays), dtype=torch.float32)
    if probs.ndim != 1 or dec.ndim != 1 or not len(probs) or not len(dec):
        raise ValueError("probabilities and decays must be non-empty lists of numbers.")
    tm.check_probability(probs, "probabilities")
    if (dec <= 0).any():
        raise ValueError("importance decays must be positive.")
    p_table = probs.repeat_interleave(len(dec)).unsqueeze(1)
    importance = dec.repeat(len(probs)).unsqueeze(1) ** torch.arange(n_features)
    model = tm.ToyModel(n_features, d_hidden, len(probs) * len(dec), p_table, importance,
                        seed=seed, device=device)
    tm.train_toy_model(model, n_steps, batch_size, lr, seed=seed, progress=progress)
    return model


class ToyModelExplorer:
    """Sliders for sparsity and importance decay over a grid of pre-trained 2-D toy models;
    shows the chosen instance's features in 2-D and its W^T W with the bias."""

    def __init__(
        self, model: tm.ToyModel, probabilities: Sequence[float], decays: Sequence[float]
    ) -> None:
        import ipywidgets as widgets

        self.probabilities = [float(p) for p in probabilities]
        self.decays = [float(d) for d in decays]
        expected = len(self.probabilities) * len(self.decays)
        if model.n_inst != expected:
            raise ValueError(
                f"the model has {model.n_inst} instances but the grid needs "
                f"{len(self.probabilities)} probabilities x {len(self.decays)} decays = "
                f"{expected}; build it with pretrain_explorer_model."
            )
        if model.d_hidden != 2:
            raise ValueError(
                f"the explorer shows 2-D models; this one has d_hidden={model.d_hidden}."
            )
        self.model = model
        self.prob_slider = widgets.SelectionSlider(
            options=[(f"{p:.3g}", i) for i, p in enumerate(self.probabilities)],
            value=len(self.probabilities) // 2, description="1-S (p)", continuous_update=False,
        )
        self.decay_slider = widgets.SelectionSlider(
            options=[(f"{d:.3g}", j) for j, d in enumerate(self.decays)],
            value=len(self.decays) // 2, description="importance decay",
            continuous_update=False,
            style={"description_width": "initial"},
        )
        self.output = widgets.Output()
        self.prob_slider.observe(self.update, names="value")
        self.decay_slider.observe(self.update, names="value")
        self.widget = widgets.VBox(
            [widgets.HBox([self.prob_slider, self.decay_slider]), self.output]
        )

    def index(self, p_index: int, decay_index: int) -> int:
        return p_index * len(self.decays) + decay_index

    def figure(self, p_index: int, decay_index: int) -> Figure:
        """The plots for one grid point: features in 2-D and W^T W beside the bias."""
        k = self.index(p_index, decay_index)
        W = self.model.W.detach()[k].cpu()
        b = self.model.b_final.detach()[k].cpu()
        imp = self.model.importance[k].cpu()
        n = W.shape[1]
        fig, (ax1, ax2, ax3) = plt.subplots(
            1, 3, figsize=(8.5, 3.2), gridspec_kw={"width_ratios": [4, 4, 0.6]})
        cmap = plt.get_cmap("viridis")
        scaled = (imp - imp.min()) / (imp.max() - imp.min()) if imp.max() > imp.min() \
            else torch.ones_like(imp)
        for i in range(n):
            ax1.plot([0, W[0, i]], [0, W[1, i]], color=cmap(float(scaled[i])), lw=2)
            ax1.scatter([W[0, i]], [W[1, i]], color=[cmap(float(scaled[i]))], s=25, zorder=3)
        lim = max(1.5, float(W.abs().max()) * 1.1)
        ax1.set_xlim(-lim, lim)
        ax1.set_ylim(-lim, lim)
        ax1.set_aspect("equal")
        ax1.set_title("features in 2-D (yellow = important)", fontsize=9)
        wtw = W.T @ W
        vmax = plotting.signed_limit(wtw, b, floor=1.0)
        image = ax2.imshow(wtw, cmap=plotting.SIGNED_CMAP, vmin=-vmax, vmax=vmax)
        ax2.set_title("W^T W", fontsize=9)
        ax3.imshow(b[:, None], cmap=plotting.SIGNED_CMAP, vmin=-vmax, vmax=vmax, aspect="auto")
        fig.colorbar(image, ax=ax3, shrink=0.8, label="W^T W  |  b")
        ax3.set_title("b", fontsize=9)
        for ax in (ax2, ax3):
            ax.set_xticks([])
        represented = int(tm.represented_features(W).sum())
        fig.suptitle(
            f"1-S = {self.probabilities[p_index]:.3g}, importance = "
            f"{self.decays[decay_index]:.3g}^i: {represented} of {n} features represented",
            fontsize=10,
        )
        fig.tight_layout()
        return fig

    def update(self, change=None) -> None:
        """Redraw into the output area (called by the sliders)."""
        with self.output:
            clear_output(wait=True)
            fig = self.figure(self.prob_slider.value, self.decay_slider.value)
            display(fig)
            plt.close(fig)

    def _ipython_display_(self) -> None:
        display(self.widget)


def toy_model_explorer(
    model: tm.ToyModel, probabilities: Sequence[float], decays: Sequence[float]
) -> ToyModelExplorer:
    """Build the explorer and draw its first state; display it by leaving it last in a cell."""
    explorer = ToyModelExplorer(model, probabilities, decays)
    explorer.update()
    return explorer


class DecoderScrubber:
    """A slider over training snapshots of W_dec: each step's cosines with the true features
    and each feature's best cosine (`plotting.plot_decoder_snapshot`), redrawn in place.
    Decoder rows keep one order throughout, grouped by the feature they end up matching."""

    def __init__(
        self,
        snapshots: Sequence[Tensor],
        true_features: Tensor,
        steps: Sequence[int] | None = None,
    ) -> None:
        import ipywidgets as widgets

        self.snapshots = [torch.as_tensor(W).detach().cpu() for W in snapshots]
        if not self.snapshots:
            raise ValueError(
                "no W_dec snapshots to scrub; train with TrainConfig(snapshot_every=...)."
            )
        self.steps = list(range(len(self.snapshots))) if steps is None else [int(s) for s in steps]
        if len(self.steps) != len(self.snapshots):
            raise ValueError(
                f"got {len(self.steps)} steps for {len(self.snapshots)} snapshots; pass the "
                "TrainResult's snapshot_steps with its snapshots."
            )
        self.true_features = true_features.detach().cpu()
        if self.true_features.shape[-1] != self.snapshots[0].shape[-1]:
            raise ValueError(
                f"true features have d = {self.true_features.shape[-1]} but the decoder rows "
                f"have d = {self.snapshots[0].shape[-1]}; pass features of the SAE's input space."
            )
        self.row_order = plotting.decoder_row_order(self.true_features, self.snapshots[-1])
        self.slider = widgets.IntSlider(
            value=len(self.snapshots) - 1, min=0, max=len(self.snapshots) - 1,
            description="snapshot", continuous_update=False,
        )
        self.output = widgets.Output()
        self.slider.observe(self.update, names="value")
        self.widget = widgets.VBox([self.slider, self.output])

    def figure(self, index: int) -> Figure:
        """The plots for snapshot `index`."""
        return plotting.plot_decoder_snapshot(
            self.true_features, self.snapshots[index], row_order=self.row_order,
            step=self.steps[index],
        )

    def update(self, change=None) -> None:
        """Redraw into the output area (called by the slider)."""
        with self.output:
            clear_output(wait=True)
            fig = self.figure(self.slider.value)
            display(fig)
            plt.close(fig)

    def _ipython_display_(self) -> None:
        display(self.widget)


def decoder_scrubber(
    snapshots: Sequence[Tensor], true_features: Tensor, steps: Sequence[int] | None = None
) -> DecoderScrubber:
    """Build the scrubber and draw the last snapshot; display it by leaving it last in a cell.
    `snapshots`, `steps`: a `TrainResult`'s `snapshots` and `snapshot_steps`."""
    scrubber = DecoderScrubber(snapshots, true_features, steps)
    scrubber.update()
    return scrubber


class TrainingMonitor:
    """A live figure of a training run: the loss terms, L0, explained variance and the dead
    fraction (`plotting.plot_training_curves`), redrawn in place while `train_sae` runs.

        monitor = TrainingMonitor(n_steps=cfg.n_steps)
        display(monitor)
        train_sae(sae, data, cfg, callback=monitor)
        monitor.close()

    Calling the monitor with a log entry (what `train_sae` passes its callback) records it and
    updates the one-line summary; the figure is redrawn at most every `min_interval_s`
    seconds, so drawing never slows training much. `close()` draws the final state.
    """

    def __init__(self, n_steps: int | None = None, title: str = "training",
                 min_interval_s: float = 2.0) -> None:
        import ipywidgets as widgets

        self.n_steps = n_steps
        self.title = title
        self.min_interval_s = min_interval_s
        self.history: list[dict[str, float]] = []
        self.redraws = 0
        self._last_draw = float("-inf")
        self.summary = widgets.HTML(value=f"<b>{title}</b>: waiting for the first log entry")
        self.output = widgets.Output()
        self.widget = widgets.VBox([self.summary, self.output])

    def __call__(self, values: Mapping[str, float]) -> None:
        """Record one log entry (a `train_sae` callback); redraw if enough time has passed."""
        for key in ("step", "loss", "l0", "explained_variance", "dead_fraction"):
            if key not in values:
                raise ValueError(f"a training log entry needs {key!r}; got keys {sorted(values)}. "
                                 "Pass the monitor as train_sae(..., callback=monitor).")
        self.history.append(dict(values))
        of = f"/{self.n_steps}" if self.n_steps else ""
        self.summary.value = (
            f"<b>{self.title}</b>: step {int(values['step'])}{of} · loss {values['loss']:.4g}"
            f" · L0 {values['l0']:.1f} · explained variance "
            f"{values['explained_variance']:.3f} · dead {values['dead_fraction']:.1%}"
        )
        if time.monotonic() - self._last_draw >= self.min_interval_s:
            self.redraw()

    def figure(self) -> Figure:
        """The curves so far."""
        return plotting.plot_training_curves({self.title: self.history}, n_steps=self.n_steps)

    def redraw(self) -> None:
        """Draw the curves so far into the output area, replacing the previous drawing."""
        with self.output:
            clear_output(wait=True)
            fig = self.figure()
            display(fig)
            plt.close(fig)
        self.redraws += 1
        self._last_draw = time.monotonic()

    def close(self) -> None:
        """Draw the final state (call it when training has finished or stopped)."""
        self.redraw()

    def _ipython_display_(self) -> None:
        display(self.widget)
