"""The interpretation library (features, scorecard, splitting) on hand-made activations."""

from __future__ import annotations

import pytest
import torch

from sae_course import features as F
from sae_course import scorecard as S
from sae_course import splitting


def make_acts(dense: torch.Tensor) -> F.LatentActivations:
    """LatentActivations from dense [n, L, d_sae] latents (position 0 is BOS, dropped)."""
    n, L, d = dense.shape
    dense = dense.clone()
    dense[:, 0] = 0
    c, p, j = dense.nonzero(as_tuple=True)
    counted = torch.ones(n, L, dtype=torch.bool)
    counted[:, 0] = False
    tokens = torch.arange(n * L).reshape(n, L) % 50
    return F._pack(tokens, j, c * L + p, dense[c, p, j], d, counted)


def random_dense(seed: int = 0, n: int = 6, L: int = 20, d: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, L, d, generator=g)
    return x * (torch.rand(n, L, d, generator=g) < 0.3)


def test_columns_round_trip_and_density():
    dense = random_dense()
    acts = make_acts(dense)
    dense[:, 0] = 0
    for i in range(5):
        torch.testing.assert_close(acts.activations_of(i), dense[..., i])
    torch.testing.assert_close(acts.density(), (dense[:, 1:] > 0).float().mean((0, 1)))
    with pytest.raises(IndexError, match="latents 0..4"):
        acts.column(5)


def test_top_examples_do_not_overlap_and_are_highest():
    dense = torch.zeros(2, 30, 1)
    dense[0, 10, 0], dense[0, 12, 0], dense[0, 25, 0], dense[1, 5, 0] = 5, 4, 3, 2
    acts = make_acts(dense)
    ex = F.top_examples(acts, 0, n=3, window=(2, 1))
    assert [(e.context, e.position) for e in ex] == [(0, 10), (0, 25), (1, 5)]
    assert ex[0].activation == 5 and ex[0].tokens[ex[0].focus] == int(acts.tokens[0, 10])


def test_quantile_bands_have_equal_counts():
    bands = F.quantile_bands(torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 0.5, 7.0]), 4)
    assert bands.tolist() == [2, 0, 1, 1, 2, 3, 0, 3]


def test_restrict_counts_only_kept_rows():
    acts = make_acts(random_dense(1))
    rows = torch.arange(0, acts.tokens.numel(), 3)
    sub = acts.restrict(rows)
    keep = torch.zeros(acts.tokens.numel(), dtype=torch.bool)
    keep[rows] = True
    keep &= acts.counted.reshape(-1)
    assert sub.n_counted == int(keep.sum())
    for i in range(acts.d_sae):
        torch.testing.assert_close(sub.activations_of(i).reshape(-1),
                                   acts.activations_of(i).reshape(-1) * keep)


def test_label_scores_match_the_single_pair_formula():
    acts = make_acts(random_dense(2))
    g = torch.Generator().manual_seed(3)
    labels = torch.rand(acts.tokens.numel(), 4, generator=g) < 0.4
    labels.view(*acts.tokens.shape, 4)[:, 0] = False
    scores = S.label_scores(acts, labels, list("abcd"))
    for i in range(acts.d_sae):
        fired = acts.activations_of(i).reshape(-1) > 0
        for j in range(4):
            p, r, f = S.precision_recall_f1(fired, labels[:, j])
            assert scores.precision[i, j].item() == pytest.approx(p)
            assert scores.recall[i, j].item() == pytest.approx(r)
            assert scores.f1[i, j].item() == pytest.approx(f)


def test_precision_recall_f1_edge_cases():
    empty = torch.zeros(4, dtype=torch.bool)
    some = torch.tensor([True, False, True, False])
    assert S.precision_recall_f1(empty, some) == (0.0, 0.0, 0.0)
    assert S.precision_recall_f1(some, some) == (1.0, 1.0, 1.0)


def test_k_sparse_probe_finds_the_informative_latent():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(400, generator=g) < 0.5
    x = torch.rand(400, 10, generator=g)
    x[:, 7] = y.float() * 2 + 0.1 * torch.rand(400, generator=g)
    assert int(S.rank_latents(x, y)[0]) == 7
    acc = S.k_sparse_probe_accuracy(x[:300], y[:300], x[300:], y[300:], k=1)
    assert acc > 0.95


def test_detection_score_is_balanced_accuracy():
    ex = [F.Example(0, i, 1.0, [1], [1.0], 0) for i in range(4)]
    assert S.detection_score(lambda e: e.position < 3, ex, ex) == pytest.approx((0.75 + 0.25) / 2)
    with pytest.raises(ValueError, match="at least one"):
        S.detection_score(lambda e: True, [], ex)


def test_match_and_split_children():
    narrow = torch.eye(3, 6)
    wide = torch.cat([torch.eye(3, 6), torch.eye(3, 6)[:1] + 0.3 * torch.eye(6)[3:4]])
    best, index = splitting.match_latents(wide, narrow)
    assert index.tolist() == [0, 1, 2, 0]
    children = splitting.split_children(narrow, wide, parent=0)
    assert [i for i, _ in children] == [0, 3]
    assert splitting.counterpart_fraction(narrow, wide) == 1.0
    with pytest.raises(ValueError, match="6 and 5"):
        splitting.decoder_cosines(narrow, torch.eye(2, 5))


def test_absorption_rate():
    holds = torch.tensor([True, True, True, True, False])
    parent = torch.tensor([True, False, False, True, True])
    child = torch.tensor([False, True, False, True, False])
    assert splitting.absorption_rate(parent, child, holds) == (0.5, 0.25)
