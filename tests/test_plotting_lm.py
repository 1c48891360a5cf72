"""Plots of Parts 04 and 06: firing-density histograms, the L0-vs-CE-gap frontier, and
steering success against cost."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import torch

from sae_course import plotting


def test_density_histograms_one_per_sae_with_the_window_in_the_title():
    densities = {"a": torch.full((50,), -10.0), "b": torch.linspace(-4, 0, 50)}
    fig = plotting.plot_density_histograms(densities, window_tokens=1234)
    ax = fig.axes[0]
    assert "1,234 tokens" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert sum(p.get_height() for p in ax.patches[:52]) == 50  # every latent of "a" counted


def test_frontier_joins_each_group_in_l0_order_and_labels_each_sae_once():
    point = {"l0": 16.0, "ce_gap": 0.01, "explained_variance": 0.9, "label": "main"}
    groups = {
        "k sweep": [{"l0": 32.0, "ce_gap": 0.004, "explained_variance": 0.97, "label": "k32"},
                    point, {"l0": 4.0, "ce_gap": 0.05, "explained_variance": 0.8,
                            "label": "k4"}],
        "widths": [point, {"l0": 16.0, "ce_gap": 0.02, "explained_variance": 0.85,
                           "label": "narrow", "d_sae": 10}],
    }
    fig = plotting.plot_ce_frontier(groups, annotate="label")
    left, right = fig.axes
    assert list(left.lines[0].get_xdata()) == [4.0, 16.0, 32.0]
    assert list(left.lines[0].get_ydata()) == [0.05, 0.01, 0.004]
    assert list(right.lines[0].get_ydata()) == [0.8, 0.9, 0.97]
    assert sorted(t.get_text() for t in left.texts) == ["k32", "k4", "main", "narrow"]
    assert left.get_xscale() == "log" and left.get_yscale() == "log"


def test_steering_curves_one_panel_per_target_lines_in_strength_order_test_split_only():
    from sae_course.steering_eval import SteeringPoint

    def pt(method, strength, split, success, ce):
        return SteeringPoint(method, strength, split, success, ce, ce, 1.0, 0.0, 1.0)

    points = [pt("a", 2, "test", .9, .6), pt("a", 0, "test", .1, 0), pt("a", 1, "test", .5, -.01),
              pt("a", 1, "train", .0, 5.0), pt("b", 0, "test", .1, 0), pt("b", 1, "test", .2, .1)]
    fig = plotting.plot_steering_curves({"topic=cooking": points, "tense=past": points},
                                        budget=0.5, labels={"a": "method A"})
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["topic=cooking", "tense=past"]
    line = panels[0].get_lines()[0]
    assert list(line.get_xdata()) == [0, -.01, .6] and list(line.get_ydata()) == [.1, .5, .9]
    assert panels[0].get_xlim()[0] < -0.01  # a negative cost stays in view
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["method A", "b"]
