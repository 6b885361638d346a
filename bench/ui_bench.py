"""``arch ui``'s pages over a large registry, timed server side (no network, no browser).

    python bench/ui_bench.py REGISTRY.db [--repeats 15]

Make the registry with ``bench/registry_bench.py --skip-peer --out DIR`` (10,000 runs by
default: 2,000 CV groups of 5 folds). Each page is asked ``--repeats`` times through Starlette's
TestClient after one warm-up; the median and the slowest are printed, in ms, with the load
average. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from starlette.testclient import TestClient

from archlab.registry import Registry
from archlab.web.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    url = f"sqlite:///{args.db}"
    with Registry(url, create=False, grace=None) as registry:
        total = registry.count()
        some = registry.runs(limit=1, offset=total // 2)[0].id
        groups = sorted({r.cv.group for r in registry.runs(limit=20) if r.cv is not None})[:2]
    pages = {
        "runs, grouped (first page of 50)": "/",
        "runs, one row per run": "/?group=0",
        "runs, last page": f"/?group=0&offset={total - 50}",
        "runs, sorted by a metric": "/?sort=-metrics.val_acc",
        "runs, filtered and sorted": "/?where=metrics.val_acc > 0.9 and config.lr < 0.001"
        "&sort=-metrics.val_loss",
        "runs JSON (50)": "/api/runs?group=0",
        "a run": f"/runs/{some}",
        "a run's series JSON": f"/api/runs/{some}/metrics",
    }
    if len(groups) == 2:
        pages.update(
            {
                "a CV group": f"/groups/{groups[0]}",
                "a CV group JSON": f"/api/groups/{groups[0]}",
                "compare two CV groups": f"/compare?ids={groups[0]}&ids={groups[1]}",
            }
        )
    pages["pictures (a page of 50 runs)"] = "/pictures"
    print(f"# {total:,} runs in {args.db}; load {os.getloadavg()}")
    print("| page | median ms | max ms |\n|---|---:|---:|")
    with TestClient(create_app(url), base_url="http://127.0.0.1") as client:
        for name, path in pages.items():
            assert client.get(path).status_code == 200, path
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                client.get(path)
                times.append((time.perf_counter() - start) * 1000)
            print(f"| {name} | {statistics.median(times):.1f} | {max(times):.1f} |")


if __name__ == "__main__":
    main()
