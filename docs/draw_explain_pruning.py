"""Draw how relevance crosses a token-pruning stage: docs/images/explain-pruning.png.

    python docs/draw_explain_pruning.py [-o docs/images/explain-pruning.png]

Left to right, one stage: the tokens before it (each with its row of R, the relevance over the
stack's original tokens, drawn as a strip of cells), the stage's weights W (new token j = sum_i
W_ji x_i), and the tokens after it with their rows R' = W R. Below, the way back that ``chefer``
takes with the same weights. The rule is ``runners/explain.py``'s ``_moves`` with
``runners/explain_lrp_prune.py``'s ``stage_weights``; the numbers in the picture are an example.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from archlab.viz.save import new_figure, save

ROOT = Path(__file__).resolve().parents[1]

#: the example: seven tokens before the stage, rows of R over seven original tokens
BEFORE = ["t1", "t2", "t3", "t4", "t5", "t6", "t7"]
#: (name after the stage, how it was made, {source: weight})
AFTER = [
    ("t1", "kept", {0: 1.0}),
    ("t4", "kept (moved)", {3: 1.0}),
    ("m", "merged (ToMe): sizes 2 and 1", {1: 2 / 3, 4: 1 / 3}),
    ("f", "fused (EViT): CLS attention .3 and .1", {2: 0.75, 5: 0.25}),
]
DROPPED = {6: "dropped (DynamicViT; EViT without fuse): its row goes"}
COLOURS = {"kept": "#2b8cbe", "kept (moved)": "#2b8cbe", "merged": "#31a354", "fused": "#e6550d"}


def _rows() -> np.ndarray:
    """Each token's row of R before the stage: mostly itself, a little of its neighbours."""
    rng = np.random.default_rng(3)
    R = np.eye(7) + 0.25 * rng.random((7, 7))
    return R / R.sum(axis=1, keepdims=True)


def _strip(ax: object, x: float, y: float, row: np.ndarray, scale: float) -> None:
    for k, value in enumerate(row):
        shade = 1 - min(1.0, value / scale)
        ax.add_patch(  # type: ignore[attr-defined]
            _rect((x + 0.22 * k, y - 0.16), 0.2, 0.32, (1.0, shade, shade))
        )


def _rect(xy: tuple[float, float], w: float, h: float, colour: tuple[float, ...]) -> object:
    from matplotlib.patches import Rectangle

    return Rectangle(xy, w, h, facecolor=colour, edgecolor="#666", linewidth=0.5)


def draw(path: Path) -> None:
    R = _rows()
    W = np.zeros((len(AFTER), len(BEFORE)))
    for j, (_, _, sources) in enumerate(AFTER):
        for i, w in sources.items():
            W[j, i] = w
    after = W @ R
    scale = float(max(R.max(), after.max()))
    fig = new_figure(figsize=(11, 5.6), dpi=110)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 11)
    ax.set_ylim(-2.1, 6.6)
    ax.axis("off")
    ax.text(0.3, 6.25, "before the stage: rows of R", fontsize=11, weight="bold")
    ax.text(6.7, 6.25, "after the stage: R' = W R", fontsize=11, weight="bold")
    ys = {i: 5.6 - 0.85 * i for i in range(len(BEFORE))}
    for i, name in enumerate(BEFORE):
        ax.text(0.3, ys[i], name, va="center", fontsize=11)
        _strip(ax, 0.7, ys[i], R[i], scale)
    out_ys = {j: 5.1 - 1.2 * j for j in range(len(AFTER))}
    for j, (name, how, sources) in enumerate(AFTER):
        kind = how.split(" ")[0]
        colour = COLOURS.get(how, COLOURS.get(kind, "#444"))
        ax.text(6.7, out_ys[j], name, va="center", fontsize=11, color=colour, weight="bold")
        _strip(ax, 7.2, out_ys[j], after[j], scale)
        ax.text(7.2, out_ys[j] - 0.38, how, fontsize=8.5, color=colour, va="center")
        for i, w in sources.items():
            ax.annotate(
                "", xy=(6.6, out_ys[j]), xytext=(2.35, ys[i]),
                arrowprops={"arrowstyle": "->", "color": colour, "lw": 0.6 + 2.4 * w},
            )  # fmt: skip
            ax.text(
                2.9, ys[i] + (out_ys[j] - ys[i]) * 0.13 + 0.1, f"{w:.2g}", fontsize=8,
                color=colour, ha="center",
            )  # fmt: skip
    for i, how in DROPPED.items():
        ax.text(2.4, ys[i], "\u2715  " + how, va="center", fontsize=8.5, color="#999")
    notes = [
        "attention, rollout, generic: R' = W R where the stage acts (rows of W sum to 1), then "
        "R = R + map R per block as usual;",
        "chefer, on the way back: a kept token passes its relevance to itself; a merged or fused "
        "token splits each feature's relevance among its",
        "sources by the positive parts of W_ji x_i (the z+ rule); a dropped token gets none. "
        "Scores stay over the full patch grid.",
    ]
    for n, line in enumerate(notes):
        ax.text(0.3, -0.95 - 0.35 * n, line, fontsize=9)
    save(fig, path, "png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", type=Path, default=ROOT / "docs/images/explain-pruning.png")
    args = parser.parse_args()
    draw(args.o)
    print(f"wrote {args.o}")


if __name__ == "__main__":
    main()
