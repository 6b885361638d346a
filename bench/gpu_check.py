"""Every zoo spec on a device, checked against a float64 CPU reference, then the peers table.

    python bench/gpu_check.py [--device cuda|cpu] [--dtype bfloat16|float32] [--specs NAME ...]
        [--small] [--skip-peers] [--quick] [--json PATH] [--tolerance X] [--inject-mismatch]

For each spec in ``specs/*.json`` (or those named by ``--specs``, by file stem):

1. *Numerics.* Build the spec on the device in ``--dtype`` (``compile_spec(doc, device=...,
   dtype=..., seed=0)``): full size on CUDA; its ``small_version`` (``archlab.specs.shrink``) with
   ``--small`` or on ``--device cpu``. Build the same spec in float64 on the CPU
   (``compile_spec(doc, dtype="float64", seed=0)``) and load the device model's state dict into it,
   converted to float64, so both hold exactly the same weights. Run both once in eval mode on the
   same inputs: ``example_inputs(batch=2)``, at the spec's ``max_len`` capped at 512 positions
   (small versions: 32), floating inputs made in ``--dtype`` and cast to float64 for the
   reference. Per output, the relative error is ``max|device - reference| / max|reference|``; the
   spec passes when every output's is within the tolerance below.
   Specs with token pruning run through ``trace_tokens`` on both sides, and the reference replays
   the device's keep rankings (``RankingReplay``): in bfloat16 a near-tie at the edge of the kept
   set can rank differently from float64, and two models that carry different tokens differ by
   far more than rounding. Besides the outputs, a pruned spec must keep as many tokens at every
   stage on both sides (the same ones, under the replay); its ranking scores (keep
   log-probabilities, CLS attention) must be within the same tolerance of the reference's; and
   every token the device kept must be one the reference keeps too, or one whose reference score
   lies within twice the measured score error of the reference's k-th (a near-tie). The share of
   the device's kept tokens the reference would keep itself is reported as ``kept``.
2. *Graph breaks.* ``torch._dynamo.explain`` on the device model, in eval and in train mode, on
   the same inputs: the spec passes with zero graph breaks (the reasons are printed otherwise).
3. *Peers.* Unless ``--skip-peers``, ``bench/peers.py --device D --dtype T`` (plus ``--quick``
   when given) runs as a subprocess and prints its own table; a missing script is reported as
   skipped, a non-zero exit or a timeout (``--peers-timeout``, default 240 s) as a failure.

A summary table follows (spec, parameters, dtype, largest relative error over the outputs,
tolerance, pass/fail, graph breaks in eval/train, kept-token agreement, seconds); the exit status
is 1 when any check failed, else 0 (2 for bad arguments). ``--json PATH`` also writes every
number, the problems found and the break reasons as JSON.

Tolerances (``TOLERANCE``; ``--tolerance X`` replaces them for one run), for outputs and for
the pruning scores alike: float32 1e-4 (TF32 is off for the run), bfloat16 2e-2. Measured with
bfloat16 on the CPU, full size at 256-512 positions: 3e-3 to 1.2e-2 on every zoo spec (DynamicViT
9e-3 with the replay, 8e-2 without it) and 97-99% of the kept tokens agreeing.

Self-test: ``--inject-mismatch`` disturbs the device model's weights after the reference got its
copy, so every numeric check must fail and the script must exit 1 (the tests use it, and
``--tolerance 0``).

Time budget: under 5 minutes on one H100 for the whole zoo at full size, the peers table excluded
(it has its own ``--peers-timeout``). Per spec: one build on the device and one float64 build on
the CPU (1-4 s for the 100M-parameter specs), one forward each at batch 2 and at most 512
positions (the float64 CPU forwards of GPT-2, BERT and T5 dominate: a few seconds each), and two
dynamo traces (about 3 s each for a 12-layer spec). Nothing is compiled or timed. On a 2-core CPU
with ``--small`` the whole zoo takes about 25 s.

Runs from a checkout without installation: when ``import archlab`` fails, ``<repo>/src`` is put on
``sys.path`` (archlab itself still needs its dependencies, pydantic and networkx among them).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
PEERS = ROOT / "bench" / "peers.py"

try:
    import archlab
except ImportError:
    sys.path.insert(0, str(ROOT / "src"))
    import archlab

from archlab.specs.analysis import has_pruning  # noqa: E402
from archlab.specs.shrink import small_version  # noqa: E402

#: Largest relative error max|a - b| / max|b| allowed against the float64 reference, per dtype.
TOLERANCE: dict[str, float] = {"float32": 1e-4, "bfloat16": 2e-2}
#: The modules whose ``Tensor.topk`` calls rank the tokens a pruning stage keeps.
PRUNE_MODULES = ("archlab.compiler.nn.pruning.dynamic", "archlab.compiler.nn.pruning.evit")
#: Longest sequence a full-size check feeds (small versions have max_len 32).
SEQ_CAP = 512
BATCH = 2


@dataclass
class SpecResult:
    spec: str
    params: int = 0
    dtype: str = ""
    small: bool = False
    seq: int | None = None
    errors: dict[str, float] = field(default_factory=dict)  # output -> relative error
    tolerance: float = math.nan
    kept: dict[str, Any] | None = None  # pruned specs: stages, agreement, score error
    graph_breaks: dict[str, int] = field(default_factory=dict)  # mode -> count
    break_reasons: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=math.nan)

    @property
    def passed(self) -> bool:
        return not self.problems


# ------------------------------------------------------------------------------------ checking


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max|got - want| / max|want| (both moved to float64 on the CPU); inf on a shape mismatch."""
    a = got.detach().to("cpu", torch.float64)
    b = want.detach().to("cpu", torch.float64)
    if a.shape != b.shape:
        return math.inf
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return math.inf
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


def _as_dict(out: Any, names: list[str]) -> dict[str, torch.Tensor]:
    return dict(out) if isinstance(out, dict) else {names[0]: out}


def _reference_inputs(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().to("cpu", torch.float64) if v.is_floating_point() else v.detach().cpu()
        for k, v in inputs.items()
    }


def _disturb(model: torch.nn.Module) -> None:
    """--inject-mismatch: add noise of half each weight's spread to every floating parameter."""
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.numel() > 1:
                noise = torch.randn(p.shape, generator=gen).to(p.device, p.dtype)
                p.add_(noise * (0.5 * p.float().std().clamp_min(1e-2)).to(p.dtype))


class RankingReplay:
    """Makes the float64 reference keep the tokens the device kept, and checks the device's choice.

    A token pruning stage ranks tokens by a score (``Tensor.topk`` in ``archlab.compiler.nn.pruning``:
    DynamicViT's keep log-probability, EViT's CLS attention). In bfloat16 a near-tie at the edge of
    the kept set can rank differently from float64; two models that carry different tokens then
    differ by far more than rounding. So the device's forward records each stage's scores and
    ranking, and the reference's forward replays the ranking: both go on with the same tokens,
    and the output comparison measures arithmetic alone. At each replayed stage, where both sides
    ranked the same input:

    - `score_error`: the largest relative error of the device's scores against the reference's
      (``max|a - b| / max|b|``, as for outputs);
    - `unexplained`: tokens the device kept that the reference ranks below its own k-th by more
      than twice the largest score error seen at that stage (a swap that rounding cannot explain:
      a wrong ranking on the device);
    - `agreement`: the share of the device's kept tokens the reference would keep too
      (informational: random weights give many near-ties).

    Only calls made from the prune module are touched (``Tensor.topk`` is patched for the length
    of one eager forward); ToMe's matching (``argsort``) is not replayed.
    """

    def __init__(self) -> None:
        self.recorded: list[tuple[torch.Tensor, torch.Tensor]] = []  # (scores, ranking)
        self.replayed = 0
        self.agree = 0
        self.total = 0
        self.unexplained = 0
        self.score_error = 0.0

    @property
    def agreement(self) -> float:
        return self.agree / self.total if self.total else 1.0

    @contextmanager
    def record(self) -> Iterator[None]:
        def keep(t: torch.Tensor, result: Any, frame: FrameType, dim: int) -> Any:
            scores = t.detach().to("cpu", torch.float64)
            self.recorded.append((scores, result.indices.detach().cpu()))
            return result

        with _patched_topk(keep):
            yield

    @contextmanager
    def replay(self) -> Iterator[None]:
        def swap(t: torch.Tensor, result: Any, frame: FrameType, dim: int) -> Any:
            if self.replayed >= len(self.recorded):
                raise RuntimeError("the reference ranked tokens more often than the device")
            device_scores, forced = self.recorded[self.replayed]
            self.replayed += 1
            own = result.indices
            if forced.shape != own.shape or device_scores.shape != t.shape:
                raise RuntimeError(
                    f"ranking shapes differ: device {tuple(forced.shape)} of "
                    f"{tuple(device_scores.shape)}, reference {tuple(own.shape)} of {tuple(t.shape)}"
                )
            self._judge(t, result.values, own, device_scores, forced, frame, dim)
            forced = forced.to(own.device)
            return torch.return_types.topk((t.gather(dim, forced), forced))

        with _patched_topk(swap):
            yield

    def _judge(
        self,
        scores: torch.Tensor,
        values: torch.Tensor,
        own: torch.Tensor,
        device_scores: torch.Tensor,
        forced: torch.Tensor,
        frame: FrameType,
        dim: int,
    ) -> None:
        ref = scores.detach().to("cpu", torch.float64)
        finite = torch.isfinite(ref)
        if not torch.equal(finite, torch.isfinite(device_scores)):
            self.score_error = math.inf  # one side masked (or overflowed) where the other did not
            return
        diff = torch.where(finite, device_scores - ref, torch.zeros_like(ref)).abs().max()
        scale = torch.where(finite, ref, torch.zeros_like(ref)).abs().max()
        error = float(diff)
        self.score_error = max(self.score_error, error / float(scale) if scale > 0 else error)
        # the stage keeps the first k of the ranking (EViT with fusion ranks every token)
        k = min(int(frame.f_locals.get("k", own.shape[dim])), own.shape[dim])
        mine, theirs = own.narrow(dim, 0, k).cpu(), forced.narrow(dim, 0, k)
        self.agree += int((theirs.unsqueeze(-1) == mine.unsqueeze(-2)).any(-1).sum())
        self.total += theirs.numel()
        kth = values.detach().to("cpu", torch.float64).narrow(dim, k - 1, 1)  # reference's k-th
        gap = kth - ref.gather(dim, theirs)  # > 0: the device kept a token ranked below it
        self.unexplained += int((gap > 2 * error).sum())


@contextmanager
def _patched_topk(hook: Callable[[torch.Tensor, Any, FrameType, int], Any]) -> Iterator[None]:
    original = torch.Tensor.topk

    def topk(t: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        result = original(t, *args, **kwargs)
        frame = sys._getframe(1)
        if frame.f_globals.get("__name__") not in PRUNE_MODULES:
            return result
        dim = kwargs.get("dim", args[1] if len(args) > 1 else -1)
        return hook(t, result, frame, dim)

    torch.Tensor.topk = topk  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        torch.Tensor.topk = original  # type: ignore[method-assign]


def compare_kept(device_trace: Any, ref_trace: Any) -> dict[str, Any]:
    """Per stage: kept lengths on both sides, and whether the kept tokens are the same."""
    stages: dict[str, Any] = {}
    ref_by_name = {r.name: r for r in ref_trace.stages}
    for record in device_trace.stages:
        ref = ref_by_name.pop(record.name, None)
        if ref is None or record.index is None or ref.index is None:
            stages[record.name] = {"missing": True}
            continue
        got, want = record.index.cpu(), ref.index.cpu()
        stages[record.name] = {
            "device_len": got.shape[1],
            "reference_len": want.shape[1],
            "same_tokens": bool(got.shape == want.shape and torch.equal(got, want)),
        }
    for name in ref_by_name:
        stages[name] = {"missing": True}
    return stages


def check_spec(
    path: Path,
    *,
    device: torch.device,
    dtype: str,
    small: bool,
    tolerance: float | None = None,
    inject_mismatch: bool = False,
) -> SpecResult:
    """Numerics against float64 and graph breaks for one spec (see the module docstring)."""
    result = SpecResult(spec=path.stem, dtype=dtype, small=small)
    start = time.perf_counter()
    try:
        _check(path, result, device, dtype, small, tolerance, inject_mismatch)
    except Exception as exc:  # a spec that fails to build or run is a failed check, not a crash
        result.problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        torch._dynamo.reset()
        result.seconds = time.perf_counter() - start
    return result


def _check(
    path: Path,
    result: SpecResult,
    device: torch.device,
    dtype: str,
    small: bool,
    tolerance: float | None,
    inject_mismatch: bool,
) -> None:
    doc = json.loads(path.read_text())
    if small:
        doc = small_version(doc)
    model = archlab.compile_spec(doc, device=device, dtype=dtype, seed=0)
    reference = archlab.compile_spec(doc, dtype="float64", seed=0)
    state = {
        k: v.detach().to("cpu", torch.float64) if v.is_floating_point() else v.detach().cpu()
        for k, v in model.state_dict().items()
    }
    reference.load_state_dict(state)
    if inject_mismatch:
        _disturb(model)
    model.eval()
    reference.eval()
    result.params = sum(p.numel() for p in model.parameters())
    pruned = has_pruning(model.graph)
    result.tolerance = tolerance if tolerance is not None else TOLERANCE[dtype]
    seq = None if small else SEQ_CAP
    inputs = model.example_inputs(batch=BATCH, length=seq)
    result.seq = max((v.shape[1] for v in inputs.values() if v.dim() in (2, 3)), default=None)
    names = list(model.spec.outputs)

    replay = RankingReplay()
    with torch.inference_mode():
        if pruned:
            with replay.record():
                out, trace = model.trace_tokens(**inputs)
            with replay.replay():
                ref_out, ref_trace = reference.trace_tokens(**_reference_inputs(inputs))
        else:
            out = model(**inputs)
            ref_out = reference(**_reference_inputs(inputs))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    got, want = _as_dict(out, names), _as_dict(ref_out, names)
    for name in names:
        result.errors[name] = relative_error(got[name], want[name])
        if not result.errors[name] <= result.tolerance:
            result.problems.append(
                f"output {name}: relative error {result.errors[name]:.3g} "
                f"above tolerance {result.tolerance:.3g}"
            )
    if pruned:
        stages = compare_kept(trace, ref_trace)
        result.kept = {
            "stages": stages,
            "rankings": len(replay.recorded),
            "agreement": replay.agreement,
        }
        for stage, entry in stages.items():
            if entry.get("missing") or entry["device_len"] != entry["reference_len"]:
                result.problems.append(f"stage {stage}: kept lengths differ ({entry})")
            elif not entry["same_tokens"]:
                result.problems.append(f"stage {stage}: replayed ranking kept other tokens")
        if replay.replayed != len(replay.recorded):
            result.problems.append(
                f"the device ranked tokens {len(replay.recorded)} times, "
                f"the reference {replay.replayed}"
            )
        result.kept["score_error"] = replay.score_error
        result.kept["unexplained"] = replay.unexplained
        if not replay.score_error <= result.tolerance:
            result.problems.append(
                f"pruning scores: relative error {replay.score_error:.3g} "
                f"above tolerance {result.tolerance:.3g}"
            )
        if replay.unexplained:
            result.problems.append(
                f"the device kept {replay.unexplained} token(s) that the reference ranks below "
                "its kept ones by more than the scores' rounding explains"
            )

    for mode in ("eval", "train"):
        model.train(mode == "train")
        torch._dynamo.reset()
        explained = torch._dynamo.explain(model)(**model.example_inputs(batch=BATCH, length=seq))
        result.graph_breaks[mode] = explained.graph_break_count
        for reason in explained.break_reasons:
            where = reason.user_stack[-1] if reason.user_stack else None
            at = f" at {where.filename}:{where.lineno}" if where is not None else ""
            result.break_reasons.append(f"{mode}: {reason.reason}{at}")
        if explained.graph_break_count:
            result.problems.append(f"{explained.graph_break_count} graph break(s) in {mode} mode")
    model.eval()


# --------------------------------------------------------------------------------------- peers


def run_peers(args: argparse.Namespace) -> dict[str, Any]:
    """bench/peers.py in a subprocess, on the same device; its output goes straight through."""
    if not PEERS.exists():
        print(f"\npeers table skipped: {PEERS.relative_to(ROOT)} does not exist", flush=True)
        return {"status": "skipped", "reason": "bench/peers.py is missing"}
    cmd = [sys.executable, str(PEERS), "--device", args.device.type, "--dtype", args.dtype]
    if args.quick:
        cmd.append("--quick")
    print(f"\n$ {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, timeout=args.peers_timeout, check=False)
    except subprocess.TimeoutExpired:
        return {
            "status": "failed",
            "reason": f"timed out after {args.peers_timeout} s",
            "seconds": time.perf_counter() - start,
        }
    status = "passed" if proc.returncode == 0 else "failed"
    out: dict[str, Any] = {"status": status, "seconds": time.perf_counter() - start}
    if proc.returncode:
        out["reason"] = f"exit status {proc.returncode}"
    return out


# ------------------------------------------------------------------------------------- report


def _fmt_error(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2e}"


def _kept_cell(result: SpecResult) -> str:
    if result.kept is None:
        return "-"
    return f"{result.kept['agreement']:.0%}"


def summary_table(results: list[SpecResult]) -> str:
    header = (
        "spec",
        "params",
        "dtype",
        "rel. error",
        "tolerance",
        "result",
        "graph breaks",
        "kept",
        "seconds",
    )
    rows = []
    for r in results:
        breaks = "/".join(str(r.graph_breaks.get(m, "?")) for m in ("eval", "train"))
        rows.append(
            (
                r.spec + (" (small)" if r.small else ""),
                f"{r.params:,}",
                r.dtype,
                _fmt_error(r.max_error),
                _fmt_error(r.tolerance),
                "pass" if r.passed else "FAIL",
                breaks,
                _kept_cell(r),
                f"{r.seconds:.1f}",
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    right = {1, 3, 4, 8}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        help="default: cuda when available, else cpu (the CPU always checks small versions)",
    )
    parser.add_argument(
        "--dtype",
        choices=["bfloat16", "float32"],
        help="device weights and inputs (default: bfloat16 on cuda, float32 on cpu)",
    )
    parser.add_argument("--specs", nargs="+", metavar="NAME", help="zoo specs by file stem")
    parser.add_argument("--small", action="store_true", help="check small versions of the specs")
    parser.add_argument("--skip-peers", action="store_true", help="do not run bench/peers.py")
    parser.add_argument("--quick", action="store_true", help="pass --quick to bench/peers.py")
    parser.add_argument("--json", type=Path, help="also write every result as JSON")
    parser.add_argument(
        "--tolerance",
        type=float,
        help="one relative tolerance for every spec instead of the table (0 fails any error)",
    )
    parser.add_argument(
        "--inject-mismatch",
        action="store_true",
        help="self-test: disturb the device weights after the copy, so every check must fail",
    )
    parser.add_argument(
        "--peers-timeout", type=float, default=240.0, help="seconds bench/peers.py may run"
    )
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    args.device = torch.device(args.device)
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.type == "cuda" else "float32"
    args.small = args.small or args.device.type == "cpu"
    zoo = {p.stem: p for p in sorted(SPECS.glob("*.json"))}
    names = args.specs or list(zoo)
    unknown = [n for n in names if n not in zoo]
    if unknown:
        parser.error(f"unknown spec(s) {', '.join(unknown)}; the zoo has {', '.join(zoo)}")
    args.paths = [zoo[n] for n in names]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dtype == "float32":  # the float32 tolerance assumes true float32 products
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    start = time.perf_counter()
    device_name = (
        torch.cuda.get_device_name(args.device)
        if args.device.type == "cuda"
        else platform.processor() or platform.machine()
    )
    size = "small versions" if args.small else f"full size, seq <= {SEQ_CAP}"
    print(
        f"gpu_check: {len(args.paths)} specs on {args.device} ({device_name}), {args.dtype}, "
        f"{size}; torch {torch.__version__}, archlab {archlab.__version__}",
        flush=True,
    )
    results = []
    for path in args.paths:
        r = check_spec(
            path,
            device=args.device,
            dtype=args.dtype,
            small=args.small,
            tolerance=args.tolerance,
            inject_mismatch=args.inject_mismatch,
        )
        results.append(r)
        verdict = "pass" if r.passed else "FAIL: " + "; ".join(r.problems)
        print(
            f"  {r.spec:28s} rel. error {_fmt_error(r.max_error):>9s}  "
            f"breaks {sum(r.graph_breaks.values())}  {r.seconds:5.1f} s  {verdict}",
            flush=True,
        )
        for reason in r.break_reasons:
            print(f"      graph break, {reason}", flush=True)
        if args.device.type == "cuda":
            torch.cuda.empty_cache()
    checks_seconds = time.perf_counter() - start

    peers: dict[str, Any] = {"status": "skipped", "reason": "--skip-peers"}
    if not args.skip_peers:
        peers = run_peers(args)

    failed = [r.spec for r in results if not r.passed]
    print("\nsummary (rel. error: max|device - float64| / max|float64| over the outputs; "
          "graph breaks: eval/train; kept: kept-token agreement of pruned specs)")  # fmt: skip
    print(summary_table(results))
    print(
        f"\nchecks: {len(results) - len(failed)}/{len(results)} passed in {checks_seconds:.1f} s; "
        f"peers: {peers['status']}"
        + (f" ({peers['reason']})" if peers.get("reason") else "")
        + f"; total {time.perf_counter() - start:.1f} s"
    )
    if failed:
        print(f"failed: {', '.join(failed)}")
    ok = not failed and peers["status"] != "failed"
    if args.json:
        payload = {
            "device": str(args.device),
            "device_name": device_name,
            "dtype": args.dtype,
            "small": args.small,
            "torch": torch.__version__,
            "archlab": archlab.__version__,
            "tolerance_table": TOLERANCE,
            "tolerance_override": args.tolerance,
            "inject_mismatch": args.inject_mismatch,
            "results": [
                {**asdict(r), "max_error": r.max_error, "passed": r.passed} for r in results
            ],
            "peers": peers,
            "seconds": time.perf_counter() - start,
            "passed": ok,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
