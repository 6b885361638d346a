"""Maps and figures of quality of embeddings: reduce (t-SNE, PCA, UMAP), kNN accuracy against a
brute-force reference, leave-one-out, trustworthiness, the raw-input baselines and neighbours."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from archlab.errors import UserInputError
from archlab.runners import embed_quality as eq
from archlab.runners.data.common import TaskData
from archlab.runners.embed_quality import EmbedMapError

HAS_UMAP = importlib.util.find_spec("umap") is not None
HAS_OPENTSNE = importlib.util.find_spec("openTSNE") is not None


def clusters(
    n: int = 200, dim: int = 10, k: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points around ``k`` well separated centres, and their cluster ids."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 10.0, size=(k, dim))
    labels = np.arange(n) % k
    return centres[labels] + rng.normal(size=(n, dim)), labels


IMPLEMENTATIONS = [
    pytest.param(
        "opentsne",
        marks=pytest.mark.skipif(not HAS_OPENTSNE, reason="openTSNE not installed"),
    ),
    "sklearn",
]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_tsne_same_seed_same_map_another_seed_another(implementation: str) -> None:
    X, _ = clusters(150)
    first = eq.reduce(X, "tsne", seed=1, implementation=implementation)
    again = eq.reduce(X, "tsne", seed=1, implementation=implementation)
    other = eq.reduce(X, "tsne", seed=2, implementation=implementation)
    assert first.shape == (150, 2) and first.dtype == np.float64
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_tsne_keeps_separated_clusters_apart(implementation: str) -> None:
    X, labels = clusters(200)
    Y = eq.reduce(X, "tsne", seed=0, implementation=implementation)
    assert eq.knn_loo_accuracy(Y, labels, k=5, metric="euclidean") == 1.0
    assert eq.trustworthiness(X, Y, k=5) > 0.9


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_tsne_perplexity_adapts_to_few_points(implementation: str) -> None:
    assert eq.tsne_perplexity(1000) == 30.0
    assert eq.tsne_perplexity(91) == 30.0
    assert eq.tsne_perplexity(31) == 10.0
    assert eq.tsne_perplexity(3) == 1.0
    assert eq.tsne_perplexity(1000, 5.0) == 5.0
    with pytest.raises(EmbedMapError, match="perplexity must be positive"):
        eq.tsne_perplexity(10, 0.0)
    X, _ = clusters(12)
    Y = eq.reduce(X, "tsne", seed=0, implementation=implementation)  # default 30 > 12 points
    assert Y.shape == (12, 2) and np.isfinite(Y).all()


def test_pca_is_the_projection_on_the_first_components_whatever_the_seed() -> None:
    X, _ = clusters(100)
    Y = eq.reduce(X, "pca", seed=0)
    np.testing.assert_array_equal(Y, eq.reduce(X, "pca", seed=0))
    np.testing.assert_array_equal(Y, eq.reduce(X, "pca", seed=7))  # exact SVD: no randomness
    centred = X - X.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(Y), np.abs(centred @ vt[:2].T), atol=1e-8)
    one_dim = eq.reduce(X[:, :1], "pca")
    np.testing.assert_allclose(one_dim[:, 0], X[:, 0] - X[:, 0].mean())
    assert (one_dim[:, 1] == 0).all()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_UMAP, reason="umap-learn not installed")
def test_umap_same_seed_same_map_another_seed_another() -> None:
    X, _ = clusters(120)
    first = eq.reduce(X, "umap", seed=1)
    np.testing.assert_array_equal(first, eq.reduce(X, "umap", seed=1))
    assert not np.allclose(first, eq.reduce(X, "umap", seed=2))
    assert first.shape == (120, 2)


def test_umap_missing_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` raises ImportError
    X, _ = clusters(20)
    with pytest.raises(EmbedMapError, match=r"pip install 'archlab\[umap\]'") as caught:
        eq.reduce(X, "umap")
    assert isinstance(caught.value, UserInputError)


def test_bad_maps_are_refused_clearly() -> None:
    X, _ = clusters(20)
    with pytest.raises(
        EmbedMapError, match="unknown map method 'isomap'; choose one of tsne, pca, umap"
    ):
        eq.reduce(X, "isomap")
    with pytest.raises(EmbedMapError, match="at least 3 points, got 2"):
        eq.reduce(X[:2], "pca")
    bad = X.copy()
    bad[3, 1] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(EmbedMapError, match=r"NaN or infinite values in 2 row\(s\) \(3, 7\)"):
        eq.reduce(bad, "tsne")
    with pytest.raises(EmbedMapError, match=r"\(n, D\) array"):
        eq.reduce(X[0], "pca")
    with pytest.raises(EmbedMapError, match="unknown t-SNE implementation 'fast'"):
        eq.reduce(X, "tsne", implementation="fast")


# ------------------------------------------------------------------------------------- kNN


def brute_force_knn(
    ref: np.ndarray, ref_y: np.ndarray, query: np.ndarray, k: int, metric: str, loo: bool = False
) -> np.ndarray:
    """Predicted labels: sort every reference row by cosine similarity or euclidean distance
    (then by row), vote, and give a tie to the tied label met first."""
    if metric == "cosine":
        unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)  # noqa: E731
        sim = unit(query) @ unit(ref).T
    else:
        sim = -np.linalg.norm(query[:, None, :] - ref[None, :, :], axis=2)
    out = []
    for i, row in enumerate(sim):
        order = sorted(
            (j for j in range(len(ref)) if not (loo and j == i)), key=lambda j: (-row[j], j)
        )
        near = [ref_y[j] for j in order[:k]]
        counts = Counter(near)
        top = max(counts.values())
        out.append(next(lab for lab in near if counts[lab] == top))
    return np.asarray(out)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 4, 5])
def test_knn_accuracy_equals_a_brute_force_reference(k: int, metric: str) -> None:
    rng = np.random.default_rng(k)
    ref, query = rng.normal(size=(60, 6)), rng.normal(size=(40, 6))
    ref_y, query_y = rng.integers(0, 3, 60), rng.integers(0, 3, 40)
    expected = np.mean(brute_force_knn(ref, ref_y, query, k, metric) == query_y)
    got = eq.knn_accuracy(ref, ref_y, query, query_y, k=k, metric=metric)
    assert got == pytest.approx(expected)
    loo = np.mean(brute_force_knn(ref, ref_y, ref, k, metric, loo=True) == ref_y)
    assert eq.knn_loo_accuracy(ref, ref_y, k=k, metric=metric) == pytest.approx(loo)


def test_knn_in_small_blocks_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(90, 5)), rng.integers(0, 4, 90)
    whole = (eq.knn_loo_accuracy(X, y), eq.knn_accuracy(X[:50], y[:50], X[50:], y[50:]))
    monkeypatch.setattr(eq, "BLOCK_ENTRIES", 7 * 90)  # 7 query rows per block, a ragged last
    assert (eq.knn_loo_accuracy(X, y), eq.knn_accuracy(X[:50], y[:50], X[50:], y[50:])) == whole


def test_knn_ties_go_to_the_nearest_neighbours_label() -> None:
    ref = np.array([[1.0, 0.0], [1.0, 0.2], [1.0, -0.5], [1.0, 0.9]])
    labels = ["b", "a", "a", "b"]  # k=4: two each; "b" holds the nearest
    assert eq.knn_accuracy(ref, labels, np.array([[1.0, 0.01]]), ["b"], k=4) == 1.0
    assert eq.knn_accuracy(ref, labels, np.array([[1.0, 0.01]]), ["a"], k=4) == 0.0


def test_knn_is_perfect_on_separable_clusters_and_chance_on_random_labels() -> None:
    X, labels = clusters(400, k=4)
    assert eq.knn_loo_accuracy(X, labels) == 1.0
    assert eq.knn_accuracy(X[:300], labels[:300], X[300:], labels[300:]) == 1.0
    rng = np.random.default_rng(1)
    noise, random_labels = rng.normal(size=(2000, 8)), rng.integers(0, 4, 2000)
    assert 0.2 < eq.knn_loo_accuracy(noise, random_labels) < 0.3  # chance: 0.25


def test_leave_one_out_never_counts_a_point_as_its_own_neighbour() -> None:
    """Pairs of nearly equal points with different labels: each point's nearest other is its
    twin, so k=1 leave-one-out is wrong everywhere, while the point itself would be right."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 4))
    X = np.concatenate([base, base + 1e-3 * rng.normal(size=base.shape)])
    y = np.concatenate([np.zeros(30, dtype=int), np.ones(30, dtype=int)])
    assert eq.knn_loo_accuracy(X, y, k=1) == 0.0
    assert eq.knn_accuracy(X, y, X, y, k=1) == 1.0  # against itself, self is the nearest
    twins = np.concatenate([base, base])  # exact duplicates are still neighbours
    assert eq.knn_loo_accuracy(twins, y, k=1) == 0.0


def test_knn_refuses_what_does_not_fit() -> None:
    X, y = clusters(10)
    with pytest.raises(EmbedMapError, match=r"k must lie in 1\.\.9"):
        eq.knn_loo_accuracy(X, y, k=10)
    with pytest.raises(EmbedMapError, match="9 labels for 10 vectors"):
        eq.knn_loo_accuracy(X, y[:9])
    with pytest.raises(EmbedMapError, match="dimension 10, query 3"):
        eq.knn_accuracy(X, y, X[:, :3], y)
    with pytest.raises(
        EmbedMapError, match="unknown kNN metric 'l1'; choose one of cosine, euclidean"
    ):
        eq.knn_loo_accuracy(X, y, metric="l1")


def test_trustworthiness_of_pca_of_2d_data_is_one() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 2)) @ np.array([[3.0, 1.0], [0.5, 2.0]]) + 4.0
    assert eq.trustworthiness(X, eq.reduce(X, "pca"), k=5) == pytest.approx(1.0)
    shuffled = eq.reduce(X, "pca")[rng.permutation(100)]
    assert eq.trustworthiness(X, shuffled, k=5) < 0.7
    with pytest.raises(EmbedMapError, match="k < n / 2"):
        eq.trustworthiness(X, X, k=50)


# ------------------------------------------------------------------------------- baselines


def test_baselines_of_images_are_their_pixels() -> None:
    images = torch.rand(6, 3, 4, 5)
    for kind in ("raw", "onehot"):
        feats = eq.baseline_features({"image": images}, kind)
        assert feats.shape == (6, 60)
        np.testing.assert_allclose(feats, images.reshape(6, -1).double().numpy())
    with pytest.raises(EmbedMapError, match="unknown baseline 'pixels'; choose one of raw, onehot"):
        eq.baseline_features({"image": images}, "pixels")


def test_token_baselines_count_real_tokens_only() -> None:
    ids = torch.tensor([[3, 1, 3, 0, 0], [2, 2, 2, 2, 1]])
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    raw = eq.baseline_features({"ids": ids, "ids_mask": mask}, "raw", vocab_size=6)
    assert raw.shape == (2, 6)
    np.testing.assert_array_equal(raw, [[0, 1, 0, 2, 0, 0], [0, 1, 4, 0, 0, 0]])
    onehot = eq.baseline_features({"ids": ids, "ids_mask": mask}, "onehot", vocab_size=6)
    np.testing.assert_allclose(onehot, [[0, 1 / 3, 0, 2 / 3, 0, 0], [0, 0.2, 0.8, 0, 0, 0]])
    by_pad = eq.baseline_features({"ids": ids}, "raw", pad_id=0)  # V from the largest real id
    np.testing.assert_array_equal(by_pad, [[0, 1, 0, 2], [0, 1, 4, 0]])
    unmasked = eq.baseline_features({"ids": ids}, "raw")  # no mask, no pad id: 0 is a token
    np.testing.assert_array_equal(unmasked[0], [2, 1, 0, 2])


def test_baselines_of_task_data_and_of_several_inputs() -> None:
    ids = torch.tensor([[1, 2], [2, 2], [0, 1]])
    data = TaskData(
        task="classify", inputs={"ids": ids, "types": torch.zeros_like(ids)},
        targets=torch.tensor([0, 1, 0]), groups=None, classes=2, vocab_size=None,
        source="npz:x", content_sha256="0", description="",
    )  # fmt: skip
    feats = eq.baseline_features(data, "raw", vocab_size=3)
    assert feats.shape == (3, 6)  # ids over 3 tokens, then token types over 3
    np.testing.assert_array_equal(feats[1], [0, 0, 2, 2, 0, 0])
    seq = torch.ones(2, 3, 4)
    feat_mask = torch.tensor([[True, False, True], [True, True, True]])
    flat = eq.baseline_features({"x": seq, "x_mask": feat_mask}, "raw")
    assert flat.shape == (2, 12) and flat[0, 4:8].sum() == 0 and flat[1].sum() == 12


# ------------------------------------------------------------------------------ neighbours


def test_neighbours_are_sorted_with_their_cosine_similarities() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 8))
    found = eq.neighbours(X, 4, k=10)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    sims = unit @ unit[4]
    expected = [j for j in np.argsort(-sims) if j != 4][:10]
    assert [i for i, _ in found] == expected
    np.testing.assert_allclose([s for _, s in found], sims[expected])
    assert all(a[1] >= b[1] for a, b in itertools.pairwise(found))
    with_self = eq.neighbours(X, 4, k=3, exclude_self=False)
    assert with_self[0][0] == 4 and with_self[0][1] == pytest.approx(1.0)
    by_vector = eq.neighbours(X, 2 * X[4], k=3)  # a vector: nothing to exclude
    assert by_vector[0][0] == 4
    assert len(eq.neighbours(X[:5], 0, k=10)) == 4  # fewer rows than k
    with pytest.raises(EmbedMapError, match="row 50 is not among the 50 vectors"):
        eq.neighbours(X, 50)


def test_knn_memory_stays_within_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """3,000 points: the whole similarity matrix would take 72 MB; blocks of 100 rows, 2.4 MB."""
    import tracemalloc

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(3000, 8)), rng.integers(0, 5, 3000)
    monkeypatch.setattr(eq, "BLOCK_ENTRIES", 100 * 3000)
    tracemalloc.start()
    try:
        eq.knn_loo_accuracy(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12e6
