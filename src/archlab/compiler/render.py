"""The expanded graph as text (DOT, Mermaid) or as a picture through Graphviz's ``dot``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import networkx as nx

from archlab.errors import UserInputError
from archlab.specs.analysis import Graph
from archlab.textsafe import printable

FORMATS = ("dot", "mermaid", "svg", "png")
GRAPHVIZ_HINT = (
    "Graphviz's 'dot' program is needed for SVG and PNG and is not on PATH. Install it "
    "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; conda: conda install "
    "graphviz), or write .dot or .mmd text instead"
)


#: DOT attributes by op, for the ops drawn apart from the rest (inputs, pruning stages)
DOT_STYLE = {
    "input": ', style="rounded,filled", fillcolor="#eef3ff"',
    "token_prune": ', style=filled, fillcolor="#ffefe0"',
}


class RenderError(UserInputError):
    """A graph cannot be written as asked (unknown format, no Graphviz)."""


def _label(graph: Graph, node_id: str) -> str:
    attrs = graph.expanded.nodes[node_id]
    op = attrs["op"]
    head = node_id if op != "input" else f"{node_id} (input)"
    extra = ""
    stage = attrs.get("stage")
    if stage is not None:
        keep = f"keep {stage.keep}" if stage.keep is not None else f"r {stage.r}"
        extra = f"\\n{stage.method}, {keep}: {stage.tokens_before} -> {stage.tokens_after} tokens"
    return f"{head}\\n{op if op != 'input' else ''} {attrs['shape']}{extra}".replace("\\n ", "\\n")


def dot_string(text: str) -> str:
    """``text`` as a quoted DOT string: controls shown as escapes, then backslashes and quotes
    escaped, so no name can end the string, add a line or inject attributes."""
    escaped = printable(text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def to_dot(graph: Graph) -> str:
    """Graphviz DOT text of the expanded graph, nodes in execution order."""
    lines = [
        f"digraph {dot_string(graph.spec.name or 'spec')} {{",
        "  rankdir=TB;",
        '  node [shape=box, fontname="Helvetica"];',
    ]
    for node_id in nx.topological_sort(graph.expanded):
        style = DOT_STYLE.get(graph.expanded.nodes[node_id]["op"], "")
        lines.append(f'  "{node_id}" [label="{_label(graph, node_id)}"{style}];')
    for a, b in graph.expanded.edges:
        lines.append(f'  "{a}" -> "{b}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(graph: Graph) -> str:
    """Mermaid flowchart text of the expanded graph."""
    ids = {n: f"n{i}" for i, n in enumerate(nx.topological_sort(graph.expanded))}
    lines = ["flowchart TD"]
    for node_id, short in ids.items():
        label = _label(graph, node_id).replace("\\n", "<br/>").replace('"', "'")
        lines.append(f'  {short}["{label}"]')
    for a, b in graph.expanded.edges:
        lines.append(f"  {ids[a]} --> {ids[b]}")
    return "\n".join(lines) + "\n"


def format_for(path: str | Path | None, fmt: str | None) -> str:
    """The format asked for by ``--format`` or else by the file's ending (default DOT)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise RenderError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return fmt
    if path is None:
        return "dot"
    suffix = Path(path).suffix.lower().lstrip(".")
    by_suffix = {
        "dot": "dot",
        "gv": "dot",
        "mmd": "mermaid",
        "mermaid": "mermaid",
        "svg": "svg",
        "png": "png",
    }
    if suffix not in by_suffix:
        raise RenderError(
            f"cannot tell the format from {str(path)!r}; end it in .dot, .mmd, .svg or .png"
        )
    return by_suffix[suffix]


def render(graph: Graph, fmt: str) -> bytes:
    """The graph in ``fmt`` (text formats UTF-8 encoded). SVG/PNG need Graphviz."""
    if fmt == "dot":
        return to_dot(graph).encode()
    if fmt == "mermaid":
        return to_mermaid(graph).encode()
    dot = shutil.which("dot")
    if dot is None:
        raise RenderError(GRAPHVIZ_HINT)
    done = subprocess.run(
        [dot, f"-T{fmt}"], input=to_dot(graph).encode(), capture_output=True, check=False
    )
    if done.returncode != 0:
        raise RenderError(f"Graphviz failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout
