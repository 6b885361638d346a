"""Memory a build or a forward pass needs, known from the analysed graph before any allocation.

A valid spec may describe a model no machine holds (``dim`` 10^9, a vocabulary of 2^31 - 1, an
image of 10^6 x 10^6 pixels). ``compile_spec`` compares the bytes its weights and fixed tables
need with the memory available (``MemAvailable`` and the cgroup limit on the host; free memory on
a CUDA device) and refuses with ``ModelTooLargeError`` instead of asking the allocator for
terabytes; ``max_params`` replaces that check by a plain parameter limit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from archlab.compiler.cost import node_cost
from archlab.errors import UserInputError
from archlab.specs.analysis import (
    Graph,
    ImageShape,
    PositionPlan,
    SeqShape,
    TokensShape,
    VecShape,
)
from archlab.specs.models import GATED_ACTIVATIONS, Rotary
from archlab.textsafe import printable

if TYPE_CHECKING:
    import torch

#: Fixed tables (sinusoidal, 2-D sine-cosine and rotary positions) are computed in float64.
TABLE_BYTES = 8


class ModelTooLargeError(UserInputError):
    """A valid spec whose weights or activations would not fit in the memory available."""


def parameter_count(graph: Graph) -> int:
    """Trainable parameters of the compiled model (tied weights once), from the graph alone."""
    return sum(node_cost(graph, node_id).params for node_id in graph.expanded.nodes)


def table_elements(graph: Graph) -> int:
    """Elements of the fixed position tables the build computes (buffers, not parameters)."""
    total = 0
    for info in graph.nodes.values():
        shape = info.shape
        if info.op == "position" and isinstance(shape, SeqShape):
            if info.spec.encoding == "sinusoidal":
                total += info.plan_as(PositionPlan).max_len * shape.dim
            elif info.spec.encoding == "sincos_2d":
                total += shape.length * shape.dim
        if info.stack is not None:
            source = graph.nodes[info.inputs[0]].shape
            length = source.max_length if isinstance(source, SeqShape) else 0
            for layer in info.stack.layers:
                plan = layer.attention
                if isinstance(plan.position, Rotary):
                    rotated = round(plan.position.fraction * plan.head_dim)
                    total += 3 * length * rotated  # the angles, then their cosines and sines
    return total


def _elements(shape: object) -> int:
    """Elements per sample of a tensor of this shape."""
    if isinstance(shape, TokensShape):
        return shape.length
    if isinstance(shape, ImageShape):
        return shape.channels * shape.height * shape.width
    if isinstance(shape, SeqShape):
        return shape.length * shape.dim
    assert isinstance(shape, VecShape)
    return shape.dim


def forward_bytes(graph: Graph, batch: int, itemsize: int) -> int:
    """A lower bound of the memory one forward pass at full length needs.

    The inputs (token ids are int64; random images and features are drawn in float32 first),
    plus twice the largest activation (a node's input and its output), the MLPs' hidden
    activations counted. Attention scores are left out: most kernels never hold them.
    """
    inputs = 0
    largest = 0
    for info in graph.nodes.values():
        n = batch * _elements(info.shape)
        if info.op == "input":
            inputs += n * (8 if isinstance(info.shape, TokensShape) else 4 + itemsize)
            continue
        largest = max(largest, n * itemsize)
        if info.stack is not None:
            for layer in info.stack.layers:
                gated = 2 if layer.block.mlp.activation in GATED_ACTIVATIONS else 1
                largest = max(largest, batch * layer.tokens * layer.hidden * gated * itemsize)
    return inputs + 2 * largest


def host_memory() -> tuple[int, str]:
    """Bytes this process may still allocate on the host, and where that number came from."""
    available, source = _meminfo()
    limit = _cgroup_room()
    if limit is not None and limit < available:
        return limit, "the memory left under this process's cgroup limit"
    return available, source


def _meminfo() -> tuple[int, str]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") or os.sysconf("SC_PHYS_PAGES")
        return pages * os.sysconf("SC_PAGE_SIZE"), "the machine's physical memory"
    except (OSError, ValueError, AttributeError):
        return 2**63 - 1, "no memory figure (none could be read)"


def _cgroup_room(base: Path = Path("/sys/fs/cgroup")) -> int | None:
    """cgroup v2 ``memory.max`` minus the memory in use, when a limit is set.

    The page cache (``file`` in ``memory.stat``) counts in ``memory.current`` but is given back
    under pressure, so it is not counted as in use (as ``MemAvailable`` does not).
    """
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int((base / "memory.current").read_text())
        for line in (base / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "file":
                used -= int(value)
        return max(int(limit) - max(used, 0), 0)
    except (OSError, ValueError):
        return None


def device_memory(device: torch.device) -> tuple[int, str]:
    """Bytes free on ``device`` (the host's memory for the CPU)."""
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return free, f"the memory free on {device}"
    return host_memory()


def _size(n: int) -> str:
    if n >= 1e18:
        return f"{n:.1e} bytes"
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _count(n: int) -> str:
    if n >= 1e15:
        return f"{n:.1e}"
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(n)


def build_need(graph: Graph, itemsize: int) -> tuple[int, int, int]:
    """``(parameters, bytes of weights, bytes of position tables)`` the build allocates."""
    params = parameter_count(graph)
    return params, params * itemsize, table_elements(graph) * TABLE_BYTES


def describe_need(graph: Graph, itemsize: int, available: int, source: str) -> str | None:
    """Why a build of ``graph`` with weights of ``itemsize`` bytes exceeds ``available``, or None."""
    params, weights, tables = build_need(graph, itemsize)
    if weights + tables <= available:
        return None
    what = f"{_count(params)} parameters of {itemsize} bytes"
    if tables:
        what += f" and {_size(tables)} of position tables"
    name = _name(graph)
    return (
        f"{name} needs {_size(weights + tables)} to build ({what}), more than the "
        f"{_size(available)} available ({source})"
    )


def _name(graph: Graph) -> str:
    return printable(graph.spec.name) if graph.spec.name else "the spec"


RAISE_LIMIT = (
    "shrink the spec, or, if that memory will be there, pass --max-params N "
    "(compile_spec(..., max_params=N)) to allow up to N parameters whatever is free now"
)


def check_build(
    graph: Graph, device: torch.device, dtype: torch.dtype | None, max_params: int | None
) -> None:
    """Refuse (``ModelTooLargeError``) a model too large to build, before any allocation.

    With ``max_params`` the limit is that parameter count; otherwise the weights (built in
    float32, then cast to ``dtype``) and fixed tables must fit the memory available on the host
    and, for a CUDA device, on the device.
    """
    import torch

    if max_params is not None:
        params = parameter_count(graph)
        if params > max_params:
            raise ModelTooLargeError(
                f"{_name(graph)} has {params:,} parameters ({_count(params)}), "
                f"more than --max-params {max_params:,}; shrink the spec or raise --max-params"
            )
        return
    itemsize = (dtype or torch.get_default_dtype()).itemsize
    problem = describe_need(graph, max(4, itemsize), *host_memory())
    if problem is None and device.type == "cuda":
        problem = describe_need(graph, itemsize, *device_memory(device))
    if problem is not None:
        raise ModelTooLargeError(f"{problem}; {RAISE_LIMIT}")


def check_forward(graph: Graph, batch: int, device: torch.device, itemsize: int) -> None:
    """Refuse a test forward pass at full length whose tensors would not fit the memory left."""
    need = forward_bytes(graph, batch, itemsize)
    available, source = device_memory(device)
    if need > available:
        raise ModelTooLargeError(
            f"a forward pass of batch {batch} at the inputs' full size needs at least "
            f"{_size(need)}, more than the {_size(available)} available ({source}); "
            "skip it with --no-forward or use a smaller --batch"
        )
