"""lib.intents: prefix segmentation, K-means prototypes, InfoNCE, silhouette, on hand-checked examples."""
import math

import numpy as np
import pytest
import torch

from lib import intents


def test_prefix_segments_hand_example():
    got = intents.prefix_segments([3, 1, 4])
    assert [p.tolist() for p in got] == [[3], [3, 1], [3, 1, 4]]
    assert [p.tolist() for p in intents.prefix_segments([3, 1, 4], min_len=2)] == [[3, 1], [3, 1, 4]]
    assert intents.prefix_segments([5], min_len=2) == []
    with pytest.raises(ValueError, match="min_len"):
        intents.prefix_segments([1, 2], min_len=0)


def test_prefix_positions_are_the_real_items_of_a_left_padded_batch():
    seq = torch.tensor([[0, 3, 1], [2, 7, 1]])
    rows, cols = intents.prefix_positions(seq)
    assert rows.tolist() == [0, 0, 1, 1, 1] and cols.tolist() == [1, 2, 0, 1, 2]


def _blobs(seed=0, n=60):
    g = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    X = np.concatenate([c + g.normal(size=(n, 2)) for c in centres]).astype(np.float32)
    return X, np.repeat(np.arange(3), n), centres


def test_kmeans_prototypes_are_stable_under_a_seed_and_find_the_blobs():
    X, _, centres = _blobs()
    a = intents.fit_prototypes(X, 3, seed=7)
    b = intents.fit_prototypes(X, 3, seed=7)
    assert a.shape == (3, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    # the minibatch path is deterministic too
    np.testing.assert_array_equal(intents.fit_prototypes(X, 3, seed=1, minibatch=True),
                                  intents.fit_prototypes(X, 3, seed=1, minibatch=True))
    found = sorted(map(tuple, np.round(a)))                    # every blob centre found once
    assert found == sorted(map(tuple, centres))
    with pytest.raises(ValueError, match="N >= K"):
        intents.fit_prototypes(X[:2], 3)


def test_nearest_prototype_and_assign():
    c = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    h = torch.tensor([[1.0, 1.0], [9.0, -1.0], [4.9, 0.0]])
    assert intents.nearest_prototype(h, c).tolist() == [0, 1, 0]
    P = intents.IntentPrototypes(K=3, seed=0)
    with pytest.raises(RuntimeError, match="before fit"):
        P.assign(h)
    X, y, _ = _blobs()
    P.fit(torch.from_numpy(X))
    k, s = P.assign(torch.from_numpy(X))
    assert s.shape == (len(X), 2) and torch.equal(s, P.c[k])
    # each blob maps to one prototype
    assert all(len(set(k[y == b].tolist())) == 1 for b in range(3))
    with pytest.raises(ValueError, match="K"):
        intents.IntentPrototypes(K=1)


def test_info_nce_matches_hand_computation():
    z_i = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z_j = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # tau = 0.5 doubles every dot product; rows a, b, a', b' (positive first, then the two other views)
    e = math.exp
    rows = [math.log(1 + 2 * e(-2)),                    # a : pos 2, negs b 0, b' 0
            math.log(2 + e(-4)),                        # b : pos 4, negs a 0, a' 4
            math.log(2 + e(2)),                         # a': pos 2, negs b 4, b' 2
            math.log(1 + e(-4) + e(-2))]                # b': pos 4, negs a 0, a' 2
    got = intents.info_nce(z_i, z_j, temperature=0.5)
    assert got.item() == pytest.approx(sum(rows) / 4, rel=1e-6)
    # distinct targets: same as no targets
    assert intents.info_nce(z_i, z_j, 0.5, targets=torch.tensor([3, 4])).item() == pytest.approx(got.item())


def test_info_nce_masks_same_target_pairs():
    z_i = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z_j = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # both sequences share their next item: no negatives left, the loss is exactly 0
    assert intents.info_nce(z_i, z_j, 0.5, targets=torch.tensor([9, 9])).item() == pytest.approx(0.0, abs=1e-7)
    # three sequences, two share a target: row a's only negative is the third sequence's two views
    z_i3 = torch.cat([z_i, torch.tensor([[1.0, 0.0]])])
    z_j3 = torch.cat([z_j, torch.tensor([[0.0, 1.0]])])
    full = intents.info_nce(z_i3, z_j3, 1.0, targets=torch.tensor([1, 1, 2]))
    unmasked = intents.info_nce(z_i3, z_j3, 1.0, targets=torch.tensor([1, 2, 3]))
    assert full.item() < unmasked.item()
    with pytest.raises(ValueError, match="sim"):
        intents.info_nce(z_i, z_j, sim="l2")


def test_info_nce_cosine_is_scale_free():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    assert intents.info_nce(a, b, 0.2, sim="cos").item() == pytest.approx(
        intents.info_nce(3 * a, 7 * b, 0.2, sim="cos").item(), rel=1e-5)


def test_silhouette_hand_example_and_right_labels():
    h = np.array([[0.0], [1.0], [10.0], [11.0]])
    expected = 1 - (2 / 10.5 + 2 / 9.5) / 4
    assert intents.silhouette(h, [0, 0, 1, 1]) == pytest.approx(expected)
    X, y, _ = _blobs()
    good = intents.silhouette(X, y)
    shuffled = intents.silhouette(X, np.random.default_rng(0).permutation(y))
    assert good > 0.7 and abs(shuffled) < 0.1
    with pytest.raises(ValueError, match="one label per point"):
        intents.silhouette(X, y[:-1])
    with pytest.raises(ValueError, match="2 distinct"):
        intents.silhouette(X, np.zeros(len(X)))
    # the section 8 score: K-means on the points themselves, one value per seed
    s = intents.kmeans_silhouette(X, 3, seeds=(0, 1))
    assert len(s) == 2 and all(v == pytest.approx(good, abs=0.02) for v in s)


def test_transition_matrix():
    M = intents.transition_matrix([[0, 0, 1, 2], [2, 1]], K=3)
    expected = np.zeros((3, 3), int)
    expected[0, 0] = expected[0, 1] = expected[1, 2] = expected[2, 1] = 1
    np.testing.assert_array_equal(M, expected)


def test_genre_matrix_and_dominant_genre_by_hand():
    genres = [[], ["Drama"], ["Drama", "Comedy"], ["Horror"], ["unknown"]]     # item 0 = padding
    G, names = intents.genre_matrix(genres)
    assert names == ["Comedy", "Drama", "Horror"]
    np.testing.assert_array_equal(G, [[0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]])
    Gn, _ = intents.genre_matrix(genres, normalise=True)
    assert Gn[2].tolist() == [0.5, 0.5, 0.0]
    # catalogue: drama-heavy. Genre mass of training interactions: Drama 1+1+0.5+0.5 = 3, Comedy 1, Horror 1 (of 5)
    train = [np.array([1, 1, 2]), np.array([2, 3])]
    # user A reads [1, 2]: Comedy 0.25, Drama 0.75 -> excess Comedy 0.25-0.2 = 0.05, Drama 0.75-0.6 = 0.15 -> Drama
    # user B reads [2, 3]: Comedy 0.25, Drama 0.25, Horror 0.5 -> Horror +0.3 (a raw count would tie) -> Horror
    # user C reads [1, 2, 3] but window 1 -> only item 3 -> Horror; all three -> Drama share 0.5 < 0.6 ... Horror
    dom = intents.dominant_genres([[1, 2], [2, 3], [1, 2, 3]], genres, train)
    assert dom.tolist() == ["Drama", "Horror", "Horror"]
    assert intents.dominant_genres([[3, 1]], genres, train, window=1).tolist() == ["Drama"]


def test_plot_helpers_label_codes_and_projection():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lib import plots
    codes, names = plots.label_codes(["a", "b", "a", "c", "a", "b"], top=2)
    assert names == ["a", "b", "other"] and codes.tolist() == [0, 1, 0, 2, 0, 1]
    Y = plots.project_2d(np.random.default_rng(0).normal(size=(40, 5)), "PCA")
    assert Y.shape == (40, 2)
    with pytest.raises(ValueError, match="'t-SNE', 'UMAP', 'PCA'"):
        plots.project_2d(Y, "MDS")
    fig, ax = plt.subplots()
    plots.scatter_by_label(ax, Y, np.arange(40) % 3, ["x", "y", "other"], highlight=0)
    assert [c.get_label() for c in ax.collections] == ["x (14)", "y (13)", "other (13)"]
    assert plots.palette(["x", "other"])[1] == (0.6, 0.6, 0.6)
    plt.close(fig)
