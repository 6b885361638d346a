"""``arch bench`` as a function: latency, throughput and peak memory of a spec, per batch size.

``benchmark(spec, ...)`` builds the spec's module (``compile_spec`` with seed 0) on the device and
in the weights' dtype asked for, then for each batch size runs ``warmup`` untimed calls and
``iters`` timed ones on random inputs of the declared shapes (``model.example_inputs``), and
reports the median latency with its 10th and 90th percentiles, the throughput (samples/s, and
tokens/s for sequence inputs) and the peak memory, with what it ran on and which performance paths
it used. ``record_bench`` writes a report to the registry as a ``bench`` run.

One call is, in ``infer`` mode, a forward pass of the module in eval mode under
``torch.inference_mode()``; in ``train`` mode, one training step: forward, a loss (cross-entropy
on random targets for ``classify`` and ``lm_head`` outputs, the mean of any other output),
backward and an AdamW step (fused on CUDA). Training here runs in the weights' own dtype: with
``--dtype bfloat16`` the weights, gradients and optimizer state are bf16 (``arch train`` instead
keeps float32 weights and runs bf16 autocast, so its steps cost somewhat more).

Timing: on CUDA each call runs from an idle device (a synchronize) between two CUDA events
(``torch.cuda.Event(enable_timing=True)``); on the CPU ``time.perf_counter`` around the call.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the timed calls (after
``reset_peak_memory_stats``: weights, activations, gradients and optimizer state all count). On
the CPU, the growth of the process's resident set (RSS) over the batch size's calls: on Linux the
peak is reset before them (``/proc/self/clear_refs``) and read back (``VmHWM``) minus the RSS
before them; elsewhere the growth of ``getrusage``'s lifetime peak, which is 0 once an earlier,
larger batch has set the peak. Memory the allocator kept from earlier batch sizes is not counted
again, so CPU numbers are indicative only.

Performance paths: ``compile`` wraps the module in ``torch.compile`` (default mode), and
``cuda_graphs`` (CUDA, inference only) captures the forward once per batch size with
``capture_cuda_graph`` and replays it; both together use ``torch.compile(mode="reduce-overhead")``,
torch's own CUDA-graph path, instead of a manual capture.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab._version import versions
from archlab.compiler.devices import device_name, resolve_device
from archlab.errors import UserInputError
from archlab.metrics import Direction
from archlab.registry import Registry
from archlab.specs import load_spec
from archlab.specs.analysis import LMHeadPlan
from archlab.specs.models import FeaturesInput, Spec, TokensInput

MODES = ("infer", "train")
DEFAULT_WARMUP = {"cpu": 3, "cuda": 10}
DEFAULT_ITERS = {"cpu": 10, "cuda": 30}

Output = Tensor | dict[str, Tensor]


@dataclass(frozen=True)
class BenchRow:
    """One batch size's measurements. Latencies in milliseconds per call (a forward pass, or a
    training step); ``tokens_per_s`` is None for specs without sequence inputs; ``peak_mem_mb``
    is None where it could not be measured; ``first_ms`` is the first warm-up call (which pays
    for ``torch.compile`` and CUDA graph capture), None without warm-up."""

    batch: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    samples_per_s: float
    tokens_per_s: float | None
    peak_mem_mb: float | None
    first_ms: float | None
    iters: int


@dataclass(frozen=True)
class BenchReport:
    """What ``benchmark`` measured, on what, and how.

    ``flops`` is per sample for a forward pass at the spec's declared lengths (multiply-add = 2),
    from ``model.summary()``. ``paths`` lists the performance paths used: weights dtype, compile
    mode (None: eager), CUDA graphs, and each attention kernel (``kernels``, as in ``arch
    compile``). ``memory`` says what ``peak_mem_mb`` measures on this device.
    """

    spec: Spec
    spec_hash: str
    device: str
    device_name: str
    dtype: str
    mode: str
    compile: bool
    compile_mode: str | None
    cuda_graphs: bool
    seq: int | None
    tokens_per_sample: int | None
    warmup: int
    iters: int
    threads: int
    params: int
    flops: int
    kernels: list[dict[str, str]]
    memory: str
    versions: dict[str, str | None]
    rows: list[BenchRow] = field(default_factory=list)
    #: what ``CompiledModel.freeze()`` did (``FreezeReport.to_dict``), None for a model not frozen
    frozen: dict[str, Any] | None = None
    started: float | None = None
    """When the measurement started (Unix time): the bench run's start in the registry."""

    @property
    def name(self) -> str:
        return self.spec.name or "spec"

    def config(self) -> dict[str, Any]:
        """The configuration a ``bench`` run records (``arch runs list --where "config.mode ==
        'train'"``)."""
        return {
            "device": self.device,
            "device_name": self.device_name,
            "dtype": self.dtype,
            "mode": self.mode,
            "compile": self.compile,
            "compile_mode": self.compile_mode,
            "cuda_graphs": self.cuda_graphs,
            "seq": self.seq,
            "tokens_per_sample": self.tokens_per_sample,
            "batches": [row.batch for row in self.rows],
            "warmup": self.warmup,
            "iters": self.iters,
            "threads": self.threads,
            "params": self.params,
            "flops": self.flops,
            "kernels": [f"{k['node']}: {k['kernel']} x{k['layers']}" for k in self.kernels],
            "memory": self.memory,
            "versions": self.versions,
            "frozen": self.frozen,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the spec's name and hash, the configuration, and ``rows``."""
        return {
            "spec": self.name,
            "spec_hash": self.spec_hash,
            **self.config(),
            "kernels": self.kernels,
            "rows": [asdict(row) for row in self.rows],
        }


def benchmark(
    spec_source: Any,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    batches: Sequence[int] = (1,),
    seq: int | None = None,
    mode: str = "infer",
    compile: bool = False,
    cuda_graphs: bool = False,
    warmup: int | None = None,
    iters: int | None = None,
    freeze: bool = False,
) -> BenchReport:
    """Measure ``spec_source`` (a path, JSON text, dict or ``Spec``) at each batch size.

    ``device``: ``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``; ``dtype``:
    the weights' dtype; ``seq``: the length of every sequence input (default: its ``max_len``);
    ``mode``: ``infer`` or ``train`` (one call = one training step); ``warmup`` and ``iters``
    default to 3 and 10 on the CPU, 10 and 30 on CUDA; ``freeze``: measure the model after
    ``CompiledModel.freeze()`` (inference only). Bad settings raise ``UserInputError`` before
    anything is built."""
    from archlab.compiler.model import compile_spec, resolve_dtype

    spec = load_spec(spec_source)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    check_settings(
        spec, dev, batches=batches, seq=seq, mode=mode, cuda_graphs=cuda_graphs,
        warmup=warmup, iters=iters, freeze=freeze,
    )  # fmt: skip
    model = compile_spec(spec, device=dev, dtype=torch_dtype, seed=0)
    return benchmark_model(
        model, batches=batches, seq=seq, mode=mode, compile=compile, cuda_graphs=cuda_graphs,
        warmup=warmup, iters=iters, freeze=freeze,
    )  # fmt: skip


def check_settings(
    spec: Spec,
    device: torch.device,
    *,
    batches: Sequence[int],
    seq: int | None,
    mode: str,
    cuda_graphs: bool,
    warmup: int | None,
    iters: int | None,
    freeze: bool = False,
) -> None:
    """Refuse settings that cannot be measured, with a message that says what to change."""
    if mode not in MODES:
        raise UserInputError(f"unknown mode {mode!r}; choose infer or train")
    if freeze and mode == "train":
        raise UserInputError(
            "--freeze makes the model inference-only (CompiledModel.freeze), so it cannot run "
            "a training step: drop --freeze, or use --mode infer"
        )
    if not batches:
        raise UserInputError("give at least one batch size (--batch N ...)")
    bad = [b for b in batches if isinstance(b, bool) or not isinstance(b, int) or b < 1]
    if bad:
        raise UserInputError(f"batch sizes must be whole numbers >= 1, not {bad[0]!r}")
    if warmup is not None and warmup < 0:
        raise UserInputError(f"--warmup must be >= 0, not {warmup}")
    if iters is not None and iters < 1:
        raise UserInputError(f"--iters must be >= 1, not {iters}")
    if cuda_graphs and mode == "train":
        raise UserInputError(
            "--cuda-graphs is inference only here: a captured graph replays one forward pass "
            "with fixed buffers, and a training step's backward and optimizer step are not "
            "captured; drop --cuda-graphs, or use --mode infer"
        )
    if cuda_graphs and device.type != "cuda":
        raise UserInputError(
            f"--cuda-graphs captures CUDA kernels, and the device is {device}: use --device cuda "
            "(or drop --cuda-graphs)"
        )
    sequences = {
        name: info
        for name, info in spec.inputs.items()
        if isinstance(info, TokensInput | FeaturesInput)
    }
    if seq is not None:
        if not sequences:
            raise UserInputError(
                f"--seq sets the length of sequence inputs, and {spec.name or 'this spec'} takes "
                f"none (its inputs: {', '.join(f'{n} ({i.kind})' for n, i in spec.inputs.items())}"
                "): drop --seq"
            )
        if seq < 1:
            raise UserInputError(f"--seq must be >= 1, not {seq}")
        for name, info in sequences.items():
            if seq > info.max_len:
                raise UserInputError(
                    f"--seq {seq} is longer than input {name!r} takes: its max_len is "
                    f"{info.max_len}"
                )


def benchmark_model(
    model: Any,
    *,
    batches: Sequence[int] = (1,),
    seq: int | None = None,
    mode: str = "infer",
    compile: bool = False,
    cuda_graphs: bool = False,
    warmup: int | None = None,
    iters: int | None = None,
    freeze: bool = False,
) -> BenchReport:
    """``benchmark`` on a module already built (a ``CompiledModel``), on its device and dtype.

    In ``train`` mode the module's weights are trained in place; ``freeze`` freezes it in place
    first (a model already frozen is measured as it is)."""
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    spec: Spec = model.spec
    frozen = freeze or model.frozen is not None
    check_settings(
        spec, device, batches=batches, seq=seq, mode=mode, cuda_graphs=cuda_graphs,
        warmup=warmup, iters=iters, freeze=frozen,
    )  # fmt: skip
    started = time.time()
    batches = list(dict.fromkeys(batches))  # each size once, in the order given
    cuda = device.type == "cuda"
    warmup = DEFAULT_WARMUP["cuda" if cuda else "cpu"] if warmup is None else warmup
    iters = DEFAULT_ITERS["cuda" if cuda else "cpu"] if iters is None else iters
    compile_mode = None
    if compile:
        compile_mode = "reduce-overhead" if cuda_graphs else "default"
    runner: Any = model
    if freeze and model.frozen is None:
        from archlab.compiler.freeze import freeze_model

        # freeze compiles when asked, and by default on CUDA unless a graph is captured below
        report = freeze_model(
            model,
            compile=True if compile else (False if cuda_graphs else None),
            mode=compile_mode if compile else None,
        )
        compile, compile_mode = report.compiled is not None, report.compiled
    elif compile:
        runner = torch.compile(model, mode=None if compile_mode == "default" else compile_mode)
    summary = model.summary()
    optimizer = _optimizer(model, device) if mode == "train" else None
    model.train(mode == "train")
    rows = []
    lengths: dict[str, int] = {}
    with _device_scope(device), _dtype_problems(summary.dtype, mode, device):
        for batch in batches:
            inputs = model.example_inputs(batch=batch, length=seq)
            lengths = {
                name: int(x.shape[1])
                for name, x in inputs.items()
                if name in spec.inputs and spec.inputs[name].kind in ("tokens", "features")
            }
            call: Callable[[], Any]
            if mode == "train":
                assert optimizer is not None
                call = _train_step(model, runner, optimizer, inputs, batch)
            elif cuda_graphs and not compile:
                call = _captured(runner, inputs)
            else:
                call = _forward(runner, inputs)
            rows.append(_measure(call, batch, sum(lengths.values()) or None, device, warmup, iters))
    threads = torch.get_num_threads()
    return BenchReport(
        spec=spec,
        spec_hash=summary.spec_hash,
        device=str(device),
        device_name=device_name(device),
        dtype=summary.dtype,
        mode=mode,
        compile=compile,
        compile_mode=compile_mode,
        cuda_graphs=cuda_graphs,
        seq=seq,
        tokens_per_sample=sum(lengths.values()) or None,
        warmup=warmup,
        iters=iters,
        threads=threads,
        params=summary.params,
        flops=summary.flops,
        kernels=list(summary.kernels),
        memory=_memory_kind(device),
        versions=versions(),
        rows=rows,
        frozen=model.frozen.to_dict() if model.frozen is not None else None,
        started=started,
    )


def capture_cuda_graph(
    model: Callable[..., Output], inputs: dict[str, Tensor], *, warmup: int = 3
) -> Callable[[], Output]:
    """Capture one forward pass of ``model`` on ``inputs`` (CUDA tensors) as a CUDA graph, in
    inference mode, and return a function that replays it and returns the output tensors.

    ``inputs`` become the graph's static input buffers: to run on other data, copy it into them
    (``inputs["x"].copy_(new)``) before calling the replay function. The returned output tensors
    are static too: each replay overwrites them. Follows torch's documented pattern
    (https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs): ``warmup`` calls on a side
    stream (lazy initialisation, cuDNN/cuBLAS heuristics), then the capture."""
    if not torch.cuda.is_available():
        raise UserInputError("CUDA graphs need a CUDA device, and this torch sees none")
    not_cuda = [name for name, x in inputs.items() if not x.is_cuda]
    if not_cuda:
        raise UserInputError(f"CUDA graph inputs must be CUDA tensors; {not_cuda} are not")
    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                model(**inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                static_out = model(**inputs)
        except RuntimeError as exc:
            raise RuntimeError(
                f"CUDA graph capture failed ({exc}); a kernel that synchronises with the host "
                "(or reads a tensor's value on the CPU) cannot be captured: run without "
                "--cuda-graphs, or try --compile --cuda-graphs (torch.compile's reduce-overhead "
                "mode splits the graph around such code)"
            ) from exc

    def replay() -> Output:
        graph.replay()
        return static_out

    return replay


_PERCENTILES = ("latency_p10_ms", "latency_p90_ms")
#: Which way each metric of a bench run improves (``_bB`` copies included).
BENCH_DIRECTIONS: dict[str, Direction] = {
    "latency_ms": "min",
    "latency_p10_ms": "min",
    "latency_p90_ms": "min",
    "throughput": "max",
    "tokens_per_s": "max",
    "peak_mem_mb": "min",
}


def record_bench(report: BenchReport, registry: Registry) -> str:
    """Record ``report`` as a ``bench`` run and return its id.

    Per batch size B, the metrics ``latency_ms``, ``latency_p10_ms``, ``latency_p90_ms``,
    ``throughput`` (samples/s), ``tokens_per_s`` and ``peak_mem_mb`` are logged at step B (a
    series over batch sizes; ``metrics.X`` is the largest batch's value), and all but the
    percentiles again as ``X_bB`` (``metrics.latency_ms_b1``, ``metrics.throughput_b64``) for
    queries on one batch size. The run is recorded once the measurements are done, with the
    measurement's start as its own. Each metric is declared with its direction first (latencies
    and memory: lower is better; throughputs: higher)."""
    names = {name: name for name in BENCH_DIRECTIONS}
    for row in report.rows:
        names.update((f"{k}_b{row.batch}", k) for k in BENCH_DIRECTIONS if k not in _PERCENTILES)
    registry.declare_metrics({name: BENCH_DIRECTIONS[base] for name, base in names.items()})
    with registry.start_run(
        report.spec, report.config(), kind="bench", tags={"mode": report.mode},
        started=report.started,
    ) as run:  # fmt: skip
        for row in sorted(report.rows, key=lambda r: r.batch):
            values = {
                "latency_ms": row.median_ms,
                "latency_p10_ms": row.p10_ms,
                "latency_p90_ms": row.p90_ms,
                "throughput": row.samples_per_s,
            }
            if row.tokens_per_s is not None:
                values["tokens_per_s"] = row.tokens_per_s
            if row.peak_mem_mb is not None:
                values["peak_mem_mb"] = row.peak_mem_mb
            run.log_metrics(values, step=row.batch)
            run.log_metrics(
                {f"{k}_b{row.batch}": v for k, v in values.items() if k not in _PERCENTILES},
                step=0,
            )
    return run.id


# ------------------------------------------------------------------------------------- helpers


def _forward(runner: Callable[..., Output], inputs: dict[str, Tensor]) -> Callable[[], Output]:
    def call() -> Output:
        with torch.inference_mode():
            return runner(**inputs)

    return call


def _captured(runner: Callable[..., Output], inputs: dict[str, Tensor]) -> Callable[[], Output]:
    """Replays of a CUDA graph captured on the first call (a warm-up call: it pays for it)."""
    replay: Callable[[], Output] | None = None

    def call() -> Output:
        nonlocal replay
        if replay is None:
            replay = capture_cuda_graph(runner, inputs)
        return replay()

    return call


def _optimizer(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if device.type == "cuda":
        with contextlib.suppress(RuntimeError, ValueError):
            return torch.optim.AdamW(params, fused=True)
    return torch.optim.AdamW(params)


def _train_step(
    model: Any,
    runner: Callable[..., Output],
    optimizer: torch.optim.Optimizer,
    inputs: dict[str, Tensor],
    batch: int,
) -> Callable[[], Tensor]:
    """One training step on ``inputs`` with fixed random targets."""
    gen = torch.Generator().manual_seed(batch)
    graph = model.graph
    targets: dict[str, Tensor | None] = {}
    for name in model.spec.outputs:
        info = graph.nodes[name]
        if info.op == "classify":
            classes = int(info.spec.classes)
            targets[name] = torch.randint(0, classes, (batch,), generator=gen)
        elif info.op == "lm_head":
            # as long as the declared output; _loss cuts it to the length the inputs give
            vocab, length = info.plan_as(LMHeadPlan).vocab, int(graph.shape(name).length)
            targets[name] = torch.randint(0, vocab, (batch, length), generator=gen)
        else:
            targets[name] = None
    device = next(iter(model.parameters())).device
    targets = {k: (v.to(device) if v is not None else None) for k, v in targets.items()}
    names = list(model.spec.outputs)

    def step() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        out = runner(**inputs)
        outs = out if isinstance(out, dict) else {names[0]: out}
        loss = sum((_loss(outs[n], targets[n]) for n in names), torch.zeros((), device=device))
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _loss(out: Tensor, target: Tensor | None) -> Tensor:
    if target is None:
        return out.float().mean()
    if out.dim() == 3:  # (B, T, V) logits of an lm_head; lengths follow the output
        target = target[:, : out.shape[1]]
        return F.cross_entropy(out.float().flatten(0, 1), target.reshape(-1))
    return F.cross_entropy(out.float(), target)


def _measure(
    call: Callable[[], Any],
    batch: int,
    tokens: int | None,
    device: torch.device,
    warmup: int,
    iters: int,
) -> BenchRow:
    cuda = device.type == "cuda"
    memory = _CpuPeak() if not cuda else None
    if memory is not None:
        memory.start()
    first_ms = None
    for i in range(warmup):
        started = time.perf_counter()
        call()
        if cuda:
            torch.cuda.synchronize(device)
        if i == 0:
            first_ms = (time.perf_counter() - started) * 1000
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = _time_cuda(call, iters) if cuda else _time_cpu(call, iters)
    if cuda:
        peak: float | None = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        assert memory is not None
        peak = memory.stop()
    median = statistics.median(times)
    p10, p90 = (float(v) for v in np.percentile(times, [10, 90]))
    seconds = median / 1000
    return BenchRow(
        batch=batch,
        median_ms=median,
        p10_ms=p10,
        p90_ms=p90,
        min_ms=min(times),
        max_ms=max(times),
        samples_per_s=batch / seconds if seconds > 0 else float("inf"),
        tokens_per_s=(batch * tokens / seconds if seconds > 0 else float("inf"))
        if tokens
        else None,
        peak_mem_mb=peak,
        first_ms=first_ms,
        iters=iters,
    )


def _time_cpu(call: Callable[[], Any], iters: int) -> list[float]:
    times = []
    for _ in range(iters):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def _time_cuda(call: Callable[[], Any], iters: int) -> list[float]:
    """Each call from an idle device, between two CUDA events on the current stream."""
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(float(start.elapsed_time(end)))
    return times


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class _CpuPeak:
    """The growth of the process's resident set over a stretch of code, in MiB (see the module
    docstring): Linux's resettable peak (VmHWM), else getrusage's lifetime peak."""

    def __init__(self) -> None:
        self.linux = False
        self.before = 0.0

    def start(self) -> None:
        _release_free_memory()
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.before = _status_mb("VmRSS")
            self.linux = True
        except (OSError, ValueError):
            self.linux = False
            self.before = _rusage_peak_mb()

    def stop(self) -> float | None:
        try:
            peak = _status_mb("VmHWM") if self.linux else _rusage_peak_mb()
        except (OSError, ValueError):
            return None
        return max(peak - self.before, 0.0)


def _release_free_memory() -> None:
    """Hand memory freed by earlier batch sizes back to the system (glibc's ``malloc_trim``), so
    that the next batch size's growth is measured from the memory in use, not the memory held."""
    import gc

    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _status_mb(field: str) -> float:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise ValueError(f"no {field} in {_STATUS}")


def _rusage_peak_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else kB


def _memory_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return "CUDA peak allocated over the timed calls (torch.cuda.max_memory_allocated)"
    if _CLEAR_REFS.exists():
        return "CPU: growth of the process RSS peak over the batch's calls (VmHWM), indicative"
    return "CPU: growth of the process's lifetime RSS peak (getrusage), indicative"


@contextlib.contextmanager
def _device_scope(device: torch.device) -> Iterator[None]:
    if device.type == "cuda":
        with torch.cuda.device(device):
            yield
    else:
        yield


@contextlib.contextmanager
def _dtype_problems(dtype: str, mode: str, device: torch.device) -> Iterator[None]:
    """A kernel missing for this dtype on this device is the user's choice to change, not a bug."""
    try:
        yield
    except (RuntimeError, NotImplementedError) as exc:
        text = str(exc)
        if "not implemented for '" in text:
            raise UserInputError(
                f"{dtype} weights cannot run --mode {mode} on {device.type} with this torch "
                f"({text.splitlines()[0]}); try --dtype float32 or bfloat16"
            ) from None
        raise


__all__ = [
    "BenchReport",
    "BenchRow",
    "benchmark",
    "benchmark_model",
    "capture_cuda_graph",
    "check_settings",
    "record_bench",
]
