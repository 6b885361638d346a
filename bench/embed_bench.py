"""Maps of embeddings on the CPU: t-SNE of 10,000 points of dimension 64 (issue 16's target:
within 100 s on the 2-core CPU), for each t-SNE implementation that is installed.

    PYTHONPATH=src python bench/embed_bench.py [--points 10000] [--dim 64] [--clusters 10]
        [--threads 2] [--seed 0] [--only opentsne|sklearn|pca|umap ...] [--json OUT.json]

The points are a Gaussian mixture: ``--clusters`` centres drawn from N(0, 4 I) in ``--dim``
dimensions, each point a centre plus N(0, I) noise, so the map has structure to find (and
the same structure on every run: ``--seed``). Each implementation runs once, in this process,
one after the other, with ``--threads`` threads (``OMP_NUM_THREADS`` and friends are set before
numpy loads; openTSNE and scikit-learn are also given ``n_jobs``). Reported per row: the wall
time of ``archlab.runners.embed_quality.reduce`` (``opentsne``: openTSNE's FFT-accelerated
interpolation, ``sklearn``: scikit-learn's Barnes-Hut TSNE, both at the default perplexity 30,
PCA initialisation and 500 + 250 iterations; ``pca`` and ``umap`` for scale), whether it is within
the target, and the map's quality: the 5-nearest-neighbour accuracy of the 2-D points (euclidean,
leave-one-out) against the mixture's labels (the 64-D points' own cosine kNN accuracy is printed
above the table for reference), and ``trustworthiness`` (k = 5) on a subsample of
2,000 points (its cost is quadratic in n).

Not a test: nothing here asserts a time. Results go to bench/RESULTS.md by hand, with the machine.

**Extraction** (``--only extraction``, or with every run): ``runners.embed.embed_rows`` (what
``arch embed`` calls: no gradient, the head's input caught by a hook) against the model's plain
forward over the same batches (eval mode, no gradient), both timed in this run, alternately,
median of ``--repeats``: the digits ViT (``specs/vit-tiny-digits.json``, seeded weights) over
the 1,797 digits at batch 256, and DeiT-S/16 (``specs/deit-small-16.json``) over 64 random
224 x 224 images at batch 32. ``ratio`` is embed's samples/s over the forward's (1.0: extraction
costs what inference costs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

TARGET_S = 100.0  # issue 16: t-SNE of 10,000 x 64 within 100 s on the 2-core CPU
TRUST_SAMPLE = 2000
ROWS = ("opentsne", "sklearn", "pca", "umap")
ROOT = Path(__file__).resolve().parents[1]


def set_threads(threads: int) -> None:
    """Cap every native thread pool before numpy (or anything with OpenMP) is imported."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = str(threads)


def mixture(points: int, dim: int, clusters: int, seed: int) -> tuple[Any, Any]:
    """``(X (points, dim) float32, labels (points,))``: a Gaussian mixture of ``clusters``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.0, size=(clusters, dim))
    labels = rng.integers(0, clusters, size=points)
    X = centres[labels] + rng.normal(size=(points, dim))
    return X.astype(np.float32), labels


def available(row: str) -> bool:
    """Whether ``row``'s library can be imported."""
    module = {"opentsne": "openTSNE", "sklearn": "sklearn", "pca": "sklearn", "umap": "umap"}[row]
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def version_of(distribution: str) -> str | None:
    """The installed version of ``distribution``, None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def measure(row: str, X: Any, labels: Any, seed: int, threads: int) -> dict[str, Any]:
    """One map: its wall time and its quality."""
    import numpy as np

    from archlab.runners import embed_quality as eq

    if row in ("opentsne", "sklearn"):
        method, options = "tsne", {"implementation": row, "n_jobs": threads}
    else:
        method, options = row, {}
    start = time.perf_counter()
    Y = eq.reduce(X, method, seed=seed, **options)
    seconds = time.perf_counter() - start
    sample = np.random.default_rng(seed).choice(len(X), min(TRUST_SAMPLE, len(X)), replace=False)
    return {
        "implementation": row,
        "seconds": round(seconds, 2),
        "within_target": bool(seconds <= TARGET_S) if method == "tsne" else None,
        "knn_loo_accuracy_2d": round(eq.knn_loo_accuracy(Y, labels, k=5, metric="euclidean"), 4),
        "trustworthiness": round(eq.trustworthiness(X[sample], Y[sample], k=5), 4),
    }


def extraction_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Embedding extraction throughput against the plain forward (module docstring)."""
    import torch

    import archlab
    from archlab.runners.data import load_data

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rows = []
    cases = [("vit-tiny-digits", "digits", 256), ("deit-small-16", None, 32)]
    for name, source, batch in [c for c in cases if c[0] in args.extraction_models]:
        model = archlab.compile_spec(ROOT / f"specs/{name}.json", seed=args.seed).eval()
        if source is not None:
            data = load_data(source, model.spec, seed=args.seed)
        else:
            from archlab.runners.data import TaskData

            images = torch.randn(64, 3, 224, 224, generator=torch.Generator().manual_seed(0))
            data = TaskData(
                "classify", {"image": images}, torch.zeros(64, dtype=torch.long), None, 1000,
                None, "random", "-", "64 random images",
            )  # fmt: skip
        embed_s, forward_s = _timed(model, data, batch, args.repeats)
        rows.append(
            {
                "model": name,
                "samples": len(data),
                "batch": batch,
                "embed_samples_per_s": round(len(data) / embed_s, 1),
                "forward_samples_per_s": round(len(data) / forward_s, 1),
                "ratio": round(forward_s / embed_s, 3),
            }
        )
        print(f"extraction {name}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def _timed(model: Any, data: Any, batch: int, repeats: int) -> tuple[float, float]:
    """Median seconds of ``embed_rows`` and of the plain forward over every row of ``data``,
    alternated, after one warm-up each."""
    import statistics

    import numpy as np
    import torch

    from archlab.runners.embed import embed_rows

    every = np.arange(len(data))

    def forward() -> None:
        with torch.no_grad():
            for start in range(0, len(data), batch):
                model(**{k: v[start : start + batch] for k, v in data.inputs.items()})

    def extract() -> None:
        embed_rows(model, data, every, batch_size=batch)

    times: dict[str, list[float]] = {"embed": [], "forward": []}
    extract()
    forward()
    for repeat in range(repeats):
        for key, work in (("embed", extract), ("forward", forward))[:: 1 if repeat % 2 else -1]:
            start = time.perf_counter()
            work()
            times[key].append(time.perf_counter() - start)
    return statistics.median(times["embed"]), statistics.median(times["forward"])


def extraction_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "embedding extraction (embed_rows) against the plain forward, same batches",
        f"{'model':<18}{'samples':>8}{'batch':>7}{'embed/s':>10}{'forward/s':>11}{'ratio':>7}",
    ]
    for r in rows:
        lines.append(
            f"{r['model']:<18}{r['samples']:>8}{r['batch']:>7}{r['embed_samples_per_s']:>10.1f}"
            f"{r['forward_samples_per_s']:>11.1f}{r['ratio']:>7.2f}"
        )
    return "\n".join(lines)


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = (
        f"t-SNE / maps of {args.points:,} x {args.dim} ({args.clusters} clusters), "
        f"{args.threads} thread{'s' if args.threads != 1 else ''}; target {TARGET_S:.0f} s for t-SNE"
    )
    lines = [
        head,
        f"{'implementation':<15}{'seconds':>10}{'target':>9}{'kNN acc 2-D':>14}{'trust':>8}",
    ]
    for r in rows:
        target = {True: "yes", False: "NO", None: "-"}[r["within_target"]]
        lines.append(
            f"{r['implementation']:<15}{r['seconds']:>10.2f}{target:>9}"
            f"{r['knn_loo_accuracy_2d']:>14.4f}{r['trustworthiness']:>8.4f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="extraction timings per side")
    parser.add_argument(
        "--extraction-models",
        nargs="+",
        default=["vit-tiny-digits", "deit-small-16"],
        choices=["vit-tiny-digits", "deit-small-16"],
    )
    parser.add_argument(
        "--only", nargs="+", choices=(*ROWS, "extraction"), help="run only these rows"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    set_threads(args.threads)
    # torch's OpenMP runtime first: loaded after numba's (umap), its forward ran 200x slower
    import torch  # noqa: F401

    X, labels = mixture(args.points, args.dim, args.clusters, args.seed)
    from archlab.runners.embed_quality import knn_loo_accuracy

    start = time.perf_counter()
    high = knn_loo_accuracy(X, labels, k=5)
    knn_seconds = time.perf_counter() - start
    print(
        f"kNN (k=5, cosine, leave-one-out) of the {args.dim}-D points: {high:.4f} "
        f"in {knn_seconds:.2f} s",
        file=sys.stderr,
    )
    rows = []
    for row in [r for r in args.only or ROWS if r != "extraction"]:
        if not available(row):
            print(f"{row}: not installed, skipped", file=sys.stderr)
            continue
        rows.append(measure(row, X, labels, args.seed, args.threads))
        print(f"{row}: {rows[-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
    if rows:
        print(table(rows, args))
    extraction = extraction_rows(args) if not args.only or "extraction" in args.only else []
    if extraction:
        print(extraction_table(extraction))
    if args.json is not None:
        import numpy as np
        import sklearn

        result = {
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor(),
                "python": platform.python_version(),
                "numpy": np.__version__,
                "sklearn": sklearn.__version__,
                "opentsne": version_of("openTSNE"),
                "umap": version_of("umap-learn"),
                "cpus": os.cpu_count(),
            },
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "target_s": TARGET_S,
            "knn_loo_accuracy_input": round(high, 4),
            "knn_loo_seconds": round(knn_seconds, 2),
            "maps": rows,
            "extraction": extraction,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
