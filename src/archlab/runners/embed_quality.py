"""Maps of embeddings and figures of their quality: what ``arch embed`` draws and records.

``reduce(X, method, seed)`` turns ``(n, D)`` vectors into ``(n, 2)`` map coordinates: ``tsne``
(openTSNE, or scikit-learn's TSNE where openTSNE is not installed), ``pca`` (scikit-learn) or
``umap`` (umap-learn, the optional extra ``archlab[umap]``). The quality of a representation is
measured on the vectors themselves, not on the map: ``knn_accuracy`` / ``knn_loo_accuracy`` (a
cosine-similarity k-nearest-neighbour vote), and the map's ``trustworthiness`` (how many of a
point's map neighbours are its neighbours in the embedding). ``baseline_features`` gives the same
figures something to be compared with: the raw inputs (pixels, bag-of-tokens counts).
``neighbours`` lists the rows most similar to one row or vector (cosine).

Shapes: ``n`` points (samples, or rows of a token table), ``D`` their dimension.

t-SNE: openTSNE is the default because it is the faster on the issue's workload, 10,000 x 64
on a 2-core CPU with 2 threads (``bench/embed_bench.py``; FFT-accelerated interpolation from
10,000 points up, Barnes-Hut below): openTSNE 1.0.4 took 25 to 63 s where scikit-learn 1.9's
Barnes-Hut TSNE took 73 to 137 s in the same runs (2.1x to 2.9x, the spread being the shared
machine's load), maps of the same quality; scikit-learn meets the issue's 100 s only when the
machine is quiet (bench/RESULTS.md).
openTSNE is a core dependency (a wheel whose own dependencies, numpy, scipy and scikit-learn,
archlab already has); scikit-learn's TSNE is the fallback where it cannot be imported, and
``implementation="sklearn"`` asks for it. Both start from a PCA initialisation with jitter drawn
from the seed, so a seed gives the same map (on the same machine and library versions) and
another seed another.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from archlab.errors import UserInputError

if TYPE_CHECKING:
    import torch

    from archlab.runners.data.common import TaskData

PERPLEXITY = 30.0  # t-SNE's usual default (openTSNE, scikit-learn)
TSNE_IMPLEMENTATIONS = ("auto", "opentsne", "sklearn")
BASELINES = ("raw", "onehot")
KNN_METRICS = ("cosine", "euclidean")
#: entries of one block of the similarity matrix (float64): 2**24 x 8 bytes = 128 MiB
BLOCK_ENTRIES = 1 << 24
UMAP_HINT = "pip install 'archlab[umap]'"


class EmbedMapError(UserInputError):
    """Vectors that cannot be mapped or scored as asked: an unknown method, too few points,
    non-finite values, a k that does not fit, a method whose optional library is missing."""


# ------------------------------------------------------------------------------------ the maps


def reduce(X: np.ndarray, method: str = "tsne", seed: int = 0, **options: Any) -> np.ndarray:
    """``X`` ``(n, D)`` mapped to ``(n, 2)`` float64 coordinates by ``method``.

    ``tsne``: options ``perplexity`` (default 30; capped at ``(n - 1) / 3`` so that the
    ``3 * perplexity`` neighbours its affinities use exist: 30 from n = 91 points up, 1 at
    n = 4, never below 1), ``implementation`` (``auto``: openTSNE when installed, else
    scikit-learn; ``opentsne``; ``sklearn``), ``n_jobs`` (threads, default 1), ``metric``
    (``euclidean``, or ``cosine``). ``pca``: the first two principal components (exact SVD;
    the seed changes nothing, the signs are fixed by scikit-learn's ``svd_flip``). ``umap``:
    options ``n_neighbors`` (default 15, capped at ``n - 1``), ``min_dist``, ``metric``; needs
    umap-learn (``pip install 'archlab[umap]'``). The same seed gives the same map.

    Raises EmbedMapError for an unknown method (listing them), fewer than 3 points, a non-2-D
    array, NaN or infinite values, or a missing optional library.
    """
    reducer = REDUCERS.get(method)
    if reducer is None:
        known = ", ".join(REDUCERS)
        raise EmbedMapError(f"unknown map method {method!r}; choose one of {known}")
    points = check_points(X, "the vectors to map")
    if len(points) < 3:
        raise EmbedMapError(
            f"a map needs at least 3 points, got {len(points)}; map more samples (--split all)"
        )
    Y = np.asarray(reducer(points, seed, **options), dtype=np.float64)
    return Y


def check_points(X: Any, what: str) -> np.ndarray:
    """``X`` as a ``(n, D)`` float64 array of finite values; EmbedMapError otherwise."""
    points = np.asarray(X, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] < 1:
        raise EmbedMapError(f"{what} must be a (n, D) array of vectors, got shape {points.shape}")
    bad = ~np.isfinite(points)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise EmbedMapError(
            f"{what} hold NaN or infinite values in {len(rows)} row(s) ({shown}); a model "
            "whose weights or inputs overflowed cannot be mapped"
        )
    return points


def tsne_perplexity(n: int, perplexity: float = PERPLEXITY) -> float:
    """The perplexity used for ``n`` points: ``perplexity`` capped at ``(n - 1) / 3``, at least
    1 (both libraries take ``3 * perplexity`` neighbours per point, and scikit-learn refuses a
    perplexity of ``n`` or more)."""
    if perplexity <= 0:
        raise EmbedMapError(f"the t-SNE perplexity must be positive, got {perplexity}")
    return float(max(1.0, min(perplexity, (n - 1) / 3)))


def _tsne(
    X: np.ndarray,
    seed: int,
    *,
    perplexity: float = PERPLEXITY,
    implementation: str = "auto",
    n_jobs: int = 1,
    metric: str = "euclidean",
) -> np.ndarray:
    if implementation not in TSNE_IMPLEMENTATIONS:
        known = ", ".join(TSNE_IMPLEMENTATIONS)
        raise EmbedMapError(f"unknown t-SNE implementation {implementation!r}; choose {known}")
    used = tsne_perplexity(len(X), perplexity)
    if implementation == "auto":
        implementation = "opentsne" if _has_opentsne() else "sklearn"
    from threadpoolctl import threadpool_limits

    # scikit-learn's Barnes-Hut gradient runs on every core through OpenMP whatever its n_jobs:
    # 7x slower for 200 points on a busy 2-core machine than on one thread
    with threadpool_limits(limits=n_jobs):
        if implementation == "opentsne":
            import openTSNE

            tsne = openTSNE.TSNE(
                perplexity=used,
                metric=metric,
                initialization="pca",
                random_state=seed,
                n_jobs=n_jobs,
                verbose=False,
            )
            return np.asarray(tsne.fit(X))
        from sklearn.manifold import TSNE

        return np.asarray(
            TSNE(
                perplexity=used,
                metric=metric,
                init=tsne_start(X, seed),
                learning_rate="auto",
                random_state=seed,
                n_jobs=n_jobs,
            ).fit_transform(X)
        )


def tsne_start(X: np.ndarray, seed: int) -> np.ndarray:
    """openTSNE's PCA initialisation ``(n, 2)``, for scikit-learn's TSNE: the first two
    principal components scaled to a standard deviation of 1e-4 along the first, plus jitter
    of 1% of that drawn from ``seed`` (scikit-learn's own ``init="pca"`` leaves no randomness,
    so every seed would give the same map)."""
    start = _pca(X, seed)
    spread = float(np.std(start[:, 0]))
    start = start / (spread / 1e-4) if spread > 0 else np.zeros_like(start)
    rng = np.random.default_rng(seed)
    return start + rng.normal(0.0, 1e-6, size=start.shape)


def _has_opentsne() -> bool:
    try:
        import openTSNE  # noqa: F401
    except ImportError:
        return False
    return True


def _pca(X: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    if X.shape[1] < 2:  # one dimension: the centred values, and a flat second axis
        return np.column_stack([X[:, 0] - X[:, 0].mean(), np.zeros(len(X))])
    return np.asarray(PCA(n_components=2, svd_solver="full", random_state=seed).fit_transform(X))


def _umap(
    X: np.ndarray,
    seed: int,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
) -> np.ndarray:
    try:
        with warnings.catch_warnings():  # "Tensorflow not installed; ParametricUMAP ..."
            warnings.simplefilter("ignore", ImportWarning)
            import umap
    except ImportError:
        raise EmbedMapError(
            f"the umap method needs umap-learn, which is not installed; {UMAP_HINT} "
            "(or choose --method tsne or pca)"
        ) from None
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(n_neighbors, len(X) - 1)),
        min_dist=min_dist,
        metric=metric,
        random_state=seed,
        n_jobs=1,  # a random_state makes umap-learn single-threaded anyway (and say so)
    )
    return np.asarray(reducer.fit_transform(X))


REDUCERS: dict[str, Callable[..., np.ndarray]] = {"tsne": _tsne, "pca": _pca, "umap": _umap}


# ------------------------------------------------------------------------- nearest neighbours


def unit_rows(X: np.ndarray) -> np.ndarray:
    """The rows of ``X`` ``(n, D)`` scaled to length 1; a zero row stays zero (similarity 0
    with everything)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def top_k(similarity: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar columns of each row of ``similarity`` ``(b, m)``, nearest first
    (equal similarities in column order): indices ``(b, k)`` and similarities ``(b, k)``.
    Columns set to ``-inf`` are never picked while others are left."""
    b, m = similarity.shape
    kth = np.partition(similarity, m - k, axis=1)[:, m - k]
    index = np.empty((b, k), dtype=np.int64)
    for row in range(b):
        candidates = np.flatnonzero(similarity[row] >= kth[row])
        order = np.lexsort((candidates, -similarity[row, candidates]))
        index[row] = candidates[order[:k]]
    return index, np.take_along_axis(similarity, index, axis=1)


def _nearest_blocks(
    reference: np.ndarray, query: np.ndarray, k: int, exclude_self: bool, metric: str
) -> np.ndarray:
    """The ``k`` nearest reference rows of every query row, nearest first ``(q, k)``: by cosine
    similarity, or by euclidean distance (as the similarity ``-|q - r|²``); computed a block of
    query rows at a time (at most ``BLOCK_ENTRIES`` similarities). ``exclude_self``: query row
    i is reference row i, and never its own neighbour."""
    if metric not in KNN_METRICS:
        raise EmbedMapError(
            f"unknown kNN metric {metric!r}; choose one of {', '.join(KNN_METRICS)}"
        )
    cosine = metric == "cosine"
    ref, qry = (unit_rows(reference), unit_rows(query)) if cosine else (reference, query)
    ref_sq = (ref * ref).sum(axis=1)
    rows = max(1, BLOCK_ENTRIES // len(ref))
    out = np.empty((len(qry), k), dtype=np.int64)
    for start in range(0, len(qry), rows):
        part = qry[start : start + rows]
        block = part @ ref.T  # (b, m)
        if not cosine:
            block = 2 * block - (part * part).sum(axis=1)[:, None] - ref_sq[None, :]
        if exclude_self:
            here = np.arange(start, start + len(block))
            block[here - start, here] = -np.inf
        out[start : start + len(block)] = top_k(block, k)[0]
    return out


def _vote(neighbour_labels: np.ndarray) -> np.ndarray:
    """The majority label of each row of ``neighbour_labels`` ``(q, k)`` (integer codes, nearest
    first); a tie goes to the tied label met first, that is, held by the nearest neighbour."""
    q, _ = neighbour_labels.shape
    counts = np.zeros((q, int(neighbour_labels.max()) + 1), dtype=np.int64)
    np.add.at(counts, (np.arange(q)[:, None], neighbour_labels), 1)
    best = counts == counts.max(axis=1, keepdims=True)  # (q, classes)
    held = np.take_along_axis(best, neighbour_labels, axis=1)  # (q, k): a tied-best label
    return neighbour_labels[np.arange(q), held.argmax(axis=1)]


def _codes(*labels: Sequence[Any] | np.ndarray) -> list[np.ndarray]:
    """Labels of any hashable kind as shared integer codes."""
    arrays = [np.asarray(lab) for lab in labels]
    _, codes = np.unique(np.concatenate(arrays), return_inverse=True)
    cuts = np.cumsum([len(a) for a in arrays])[:-1]
    return np.split(codes.reshape(-1), cuts)


def _check_k(k: int, available: int, what: str) -> None:
    if k < 1 or k > available:
        raise EmbedMapError(f"k must lie in 1..{available} ({what}), got {k}")


def _check_labels(labels: Any, n: int, what: str) -> None:
    if len(labels) != n:
        raise EmbedMapError(f"{what}: {len(labels)} labels for {n} vectors")


def knn_accuracy(
    reference: np.ndarray,
    reference_labels: Sequence[Any] | np.ndarray,
    query: np.ndarray,
    query_labels: Sequence[Any] | np.ndarray,
    k: int = 5,
    metric: str = "cosine",
) -> float:
    """The share of ``query`` rows ``(q, D)`` whose label is the majority label of their ``k``
    nearest ``reference`` rows ``(m, D)`` by cosine similarity (a tie goes to the label of the
    nearest tied neighbour; equal similarities in reference order). Memory stays within one
    block of ``BLOCK_ENTRIES`` similarities, whatever ``q`` and ``m``. ``metric="euclidean"``
    ranks by distance instead: for 2-D map coordinates, whose angles mean nothing."""
    ref = check_points(reference, "the reference vectors")
    qry = check_points(query, "the query vectors")
    if ref.shape[1] != qry.shape[1]:
        raise EmbedMapError(f"reference vectors of dimension {ref.shape[1]}, query {qry.shape[1]}")
    _check_labels(reference_labels, len(ref), "reference")
    _check_labels(query_labels, len(qry), "query")
    _check_k(k, len(ref), f"{len(ref)} reference vectors")
    ref_codes, qry_codes = _codes(reference_labels, query_labels)
    predicted = _vote(ref_codes[_nearest_blocks(ref, qry, k, False, metric)])
    return float(np.mean(predicted == qry_codes))


def knn_loo_accuracy(
    X: np.ndarray, y: Sequence[Any] | np.ndarray, k: int = 5, metric: str = "cosine"
) -> float:
    """``knn_accuracy`` of every row of ``X`` ``(n, D)`` against all the others (leave one out:
    a row is never its own neighbour, though an identical row is)."""
    points = check_points(X, "the vectors")
    _check_labels(y, len(points), "vectors")
    _check_k(k, len(points) - 1, f"{len(points)} vectors, leaving one out")
    (codes,) = _codes(y)
    predicted = _vote(codes[_nearest_blocks(points, points, k, True, metric)])
    return float(np.mean(predicted == codes))


def neighbours(
    X: np.ndarray, query: int | np.ndarray, k: int = 10, exclude_self: bool = True
) -> list[tuple[int, float]]:
    """The ``k`` rows of ``X`` ``(n, D)`` most similar to ``query`` by cosine similarity, as
    ``(row, similarity)`` pairs, most similar first (equal similarities in row order); fewer
    when ``X`` has fewer rows. ``query`` is a row index (itself left out when
    ``exclude_self``) or a vector ``(D,)``."""
    points = check_points(X, "the vectors")
    if isinstance(query, (int, np.integer)):
        if not 0 <= int(query) < len(points):
            raise EmbedMapError(f"row {query} is not among the {len(points)} vectors")
        vector = points[int(query)]
    else:
        vector = check_points(np.asarray(query).reshape(1, -1), "the query vector")[0]
        if len(vector) != points.shape[1]:
            raise EmbedMapError(f"a query of dimension {len(vector)}, vectors {points.shape[1]}")
    if k < 1:
        raise EmbedMapError(f"k must be at least 1, got {k}")
    similarity = unit_rows(points) @ unit_rows(vector[None, :])[0]  # (n,)
    if exclude_self and isinstance(query, (int, np.integer)):
        similarity[int(query)] = -np.inf
    available = int(np.isfinite(similarity).sum())
    if available == 0:
        return []
    index, values = top_k(similarity[None, :], min(k, available))
    return [(int(i), float(s)) for i, s in zip(index[0], values[0], strict=True)]


# -------------------------------------------------------------------------- the map's quality


def trustworthiness(X: np.ndarray, Y: np.ndarray, k: int = 5, metric: str = "euclidean") -> float:
    """How far the map ``Y`` ``(n, 2)`` keeps the neighbourhoods of ``X`` ``(n, D)``: 1.0 when
    every point's ``k`` nearest map neighbours are among its nearest in ``X``, lower as points
    that were far apart come close (``sklearn.manifold.trustworthiness``; ``k < n / 2``).

    Distances in ``X`` are euclidean by default, the ones t-SNE, PCA and UMAP work with here
    (and the map's own distances are always euclidean): the figure then says how well the map
    kept what it was asked to keep. ``metric="cosine"`` asks instead about the neighbours
    ``knn_accuracy`` uses, at the price of blaming a map for differences in length it kept.
    scikit-learn holds all ``n²`` distances at once (10,000 points: 800 MB, and as much again
    to rank them): score a sample of a large map (``bench/embed_bench.py`` takes 2,000).
    """
    from sklearn.manifold import trustworthiness as sk_trustworthiness

    high = check_points(X, "the vectors")
    low = check_points(Y, "the map")
    if len(high) != len(low):
        raise EmbedMapError(f"{len(high)} vectors but {len(low)} map points")
    if not 1 <= k < len(high) / 2:
        raise EmbedMapError(f"trustworthiness needs 1 <= k < n / 2 = {len(high) / 2}, got {k}")
    return float(sk_trustworthiness(high, low, n_neighbors=k, metric=metric))


# ------------------------------------------------------------------------------- the baselines


def baseline_features(
    inputs: dict[str, torch.Tensor] | TaskData,
    kind: str,
    *,
    vocab_size: int | None = None,
    pad_id: int | None = None,
) -> np.ndarray:
    """The inputs themselves as vectors ``(N, F)``, to score beside a model's embeddings.

    Image inputs ``(N, C, H, W)`` (and feature sequences ``(N, T, dim)``, padded positions
    zeroed) are flattened, for ``raw`` and ``onehot`` alike. Token ids ``(N, T)`` become
    bag-of-tokens vectors over the vocabulary ``(N, V)``: ``raw`` the counts, ``onehot`` the
    counts divided by the sequence's length (the mean of its tokens' one-hot vectors).
    Padding is left out: positions where ``<name>_mask`` is False, else ids equal to
    ``pad_id``. ``V`` is ``vocab_size``, else the largest real id + 1. Several inputs (ids and
    token types) are concatenated in their order; ``<name>_mask`` entries are not features.
    """
    if kind not in BASELINES:
        raise EmbedMapError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")
    tensors: dict[str, torch.Tensor] = getattr(inputs, "inputs", inputs)  # type: ignore[arg-type]
    names = [n for n in tensors if not n.endswith("_mask")]
    if not names:
        raise EmbedMapError("no inputs to make baseline features of")
    parts = []
    for name in names:
        values = tensors[name].detach().cpu()
        mask = tensors.get(f"{name}_mask")
        real = None if mask is None else mask.detach().cpu().bool().numpy()
        if values.is_floating_point():
            parts.append(_flat(values.double().numpy(), real))
        else:
            parts.append(_bag(values.numpy(), real, kind, vocab_size, pad_id))
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def _flat(values: np.ndarray, real: np.ndarray | None) -> np.ndarray:
    """Images or feature sequences flattened to ``(N, F)``; padded positions of a sequence
    ``(N, T, dim)`` zeroed first."""
    if real is not None and values.ndim == 3:
        values = values * real[:, :, None]
    return values.reshape(len(values), -1)


def _bag(
    ids: np.ndarray, real: np.ndarray | None, kind: str, vocab_size: int | None, pad_id: int | None
) -> np.ndarray:
    """Token ids ``(N, T)`` as bag-of-tokens counts ``(N, V)`` over their real positions;
    divided by the number of real tokens for ``onehot``."""
    if real is None:
        real = np.ones(ids.shape, dtype=bool) if pad_id is None else ids != pad_id
    present = ids[real]
    if present.size and present.min() < 0:
        raise EmbedMapError(f"token ids must not be negative, found {int(present.min())}")
    vocab = vocab_size if vocab_size is not None else int(present.max()) + 1 if present.size else 1
    if present.size and present.max() >= vocab:
        raise EmbedMapError(f"token id {int(present.max())} outside the vocabulary of {vocab}")
    rows = np.broadcast_to(np.arange(len(ids))[:, None], ids.shape)[real]
    counts = np.zeros((len(ids), vocab), dtype=np.float64)
    np.add.at(counts, (rows, present), 1.0)
    if kind == "onehot":
        lengths = real.sum(axis=1, keepdims=True)
        counts /= np.maximum(lengths, 1)
    return counts


__all__ = [
    "BASELINES",
    "KNN_METRICS",
    "PERPLEXITY",
    "TSNE_IMPLEMENTATIONS",
    "EmbedMapError",
    "baseline_features",
    "check_points",
    "knn_accuracy",
    "knn_loo_accuracy",
    "neighbours",
    "reduce",
    "top_k",
    "trustworthiness",
    "tsne_perplexity",
    "unit_rows",
]
