"""``arch bench``: one row per batch size, the bench run it records, train mode, refusals.

Tiny specs (vit-tiny-digits, gpt-tiny at --seq 16) and 1 warm-up + 2 timed calls keep every
test fast; no timing is ever asserted, only that the numbers are there and positive. The CUDA
paths are marked ``gpu`` and skipped without a CUDA device.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from archlab import compile_spec
from archlab._version import versions
from archlab.cli import cli
from archlab.registry import Registry
from archlab.registry.provenance import provenance
from archlab.runners.benchmark import benchmark_model, capture_cuda_graph

ROOT = Path(__file__).parents[2]
VIT = str(ROOT / "specs/vit-tiny-digits.json")
GPT = str(ROOT / "specs/gpt-tiny.json")
FAST = ["--iters", "2", "--warmup", "1"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["bench", *args])
    return result.exit_code, result.stdout, result.stderr


def ok(*args: str) -> str:
    code, out, err = invoke(*args)
    assert code == 0, (args, out, err)
    return out


def bench_json(*args: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ok(*args, "--json"))
    return doc


def fails(*args: str, message: str) -> str:
    """The command exits 2 with ``message`` on stderr and no traceback."""
    code, out, err = invoke(*args)
    assert code == 2, (args, code, out, err)
    assert message in err, err
    assert "Traceback" not in err + out
    return err


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


def check_rows(doc: dict[str, Any], batches: list[int], tokens: int | None) -> None:
    rows = doc["rows"]
    assert [row["batch"] for row in rows] == batches
    for row in rows:
        for key in ("median_ms", "p10_ms", "p90_ms", "samples_per_s", "first_ms"):
            assert row[key] > 0, (key, row)
        assert row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert row["peak_mem_mb"] is None or row["peak_mem_mb"] >= 0
        assert row["iters"] == 2
        if tokens is None:
            assert row["tokens_per_s"] is None
        else:
            assert row["tokens_per_s"] == pytest.approx(row["samples_per_s"] * tokens)


def test_json_has_one_row_per_batch_size() -> None:
    doc = bench_json(VIT, "--batch", "1", "4", "--device", "cpu", *FAST, "--no-record")
    check_rows(doc, [1, 4], tokens=None)
    assert doc["spec"] == "vit-tiny-digits"
    assert doc["device"] == "cpu" and doc["device_name"]
    assert (doc["dtype"], doc["mode"], doc["compile"], doc["cuda_graphs"]) == (
        "float32",
        "infer",
        False,
        False,
    )
    assert doc["params"] == 202_186 and doc["flops"] > 0
    assert [k["kernel"] for k in doc["kernels"]] == ["sdpa"]
    # the same versions every run's provenance records (one function makes both)
    assert doc["versions"] == versions() == provenance()["versions"]
    assert set(doc["versions"]) == {"torch", "python", "archlab", "scikit-learn"}
    assert doc["run"] is None


def test_sequence_inputs_report_tokens_per_second() -> None:
    doc = bench_json(GPT, "--seq", "16", "--batch", "1", "2", "3", *FAST, "--no-record")
    check_rows(doc, [1, 2, 3], tokens=16)
    assert doc["seq"] == 16 and doc["tokens_per_sample"] == 16


def test_batch_takes_several_values_anywhere() -> None:
    # before SPEC, repeated, and a duplicate measured once
    doc = bench_json("--batch", "2", "1", GPT, "--seq", "8", "--batch", "2", *FAST, "--no-record")
    assert [row["batch"] for row in doc["rows"]] == [2, 1]
    out = ok(VIT, *FAST, "--no-record", "--batch", "3", "1")  # --batch last, as in the README
    table_rows = [line for line in out.splitlines() if "│" in line]
    assert [row.split("│")[0].strip() for row in table_rows] == ["3", "1"]


def test_batch_without_a_number() -> None:
    fails(VIT, "--no-record", "--batch", message="'--batch' requires an argument")


def test_table_and_recorded_run(url: str) -> None:
    out = ok(GPT, "--seq", "16", "--batch", "1", "4", *FAST, "--registry", url)
    assert "gpt-tiny" in out and "median ms" in out and "tokens/s" in out
    assert "attention decoder: sdpa x4" in out
    table_rows = [line for line in out.splitlines() if "│" in line]
    assert [row.split("│")[0].strip() for row in table_rows] == ["1", "4"]
    run_id = out.strip().splitlines()[-1].split()[3]
    assert f"recorded bench run {run_id}" in out

    with Registry(url) as registry:
        [run] = registry.runs(where="kind == 'bench'")
        assert run.id == run_id and run.status == "completed" and run.spec_name == "gpt-tiny"
        config = run.config
        assert config["device"] == "cpu" and config["device_name"]
        assert (config["dtype"], config["mode"], config["seq"]) == ("float32", "infer", 16)
        assert (config["compile"], config["cuda_graphs"]) == (False, False)
        assert (config["batches"], config["warmup"], config["iters"]) == ([1, 4], 1, 2)
        assert config["versions"]["torch"] == torch.__version__
        assert config["versions"]["archlab"] and config["versions"]["python"]
        assert config["params"] == 1_089_152 and config["kernels"] == ["decoder: sdpa x4"]
        for name in ("latency_ms", "throughput", "tokens_per_s", "peak_mem_mb"):
            history = registry.metric_history(run_id, name)
            assert [step for step, *_ in history] == [1, 4], name
        for name in ("latency_ms_b1", "latency_ms_b4", "throughput_b1", "tokens_per_s_b4"):
            assert run.metrics[name] > 0, name
        assert run.metrics["latency_ms"] == run.metrics["latency_ms_b4"]
        assert registry.runs(where="kind == 'bench' and metrics.throughput_b1 > 0")
        assert not registry.runs(where="kind == 'bench' and config.mode == 'train'")

    listed = CliRunner().invoke(
        cli, ["runs", "list", "--registry", url, "--where", "kind == 'bench'", "--format", "json"]
    )
    assert listed.exit_code == 0, listed.output
    assert [r["id"] for r in json.loads(listed.stdout)] == [run_id]


def test_json_names_the_recorded_run(url: str) -> None:
    doc = bench_json(VIT, "--batch", "2", *FAST, "--registry", url)
    with Registry(url) as registry:
        assert [r.id for r in registry.runs()] == [doc["run"]]


def test_no_record_records_nothing(tmp_path: Path, url: str) -> None:
    out = ok(VIT, "--batch", "1", *FAST, "--no-record", "--registry", url)
    assert "recorded" not in out
    assert not (tmp_path / "registry.db").exists()


def test_train_mode_records(url: str) -> None:
    doc = bench_json(
        GPT, "--mode", "train", "--seq", "16", "--batch", "2", *FAST, "--registry", url
    )
    check_rows(doc, [2], tokens=16)
    with Registry(url) as registry:
        run = registry.get(doc["run"])
        assert run.config["mode"] == "train" and run.tags["mode"] == "train"
        assert run.metrics["latency_ms_b2"] > 0


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_train_mode_changes_the_weights(dtype: str) -> None:
    model = compile_spec(VIT, dtype=dtype, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = benchmark_model(model, batches=[2, 3], mode="train", warmup=1, iters=2)
    assert report.mode == "train" and report.dtype == dtype
    assert [row.batch for row in report.rows] == [2, 3]
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "head.fc.weight" in changed and len(changed) > len(before) // 2
    assert model.training


def test_infer_mode_leaves_the_weights() -> None:
    model = compile_spec(GPT, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    benchmark_model(model, batches=[1], seq=8, warmup=1, iters=2)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not model.training


def test_bfloat16_weights_on_the_cpu() -> None:
    doc = bench_json(VIT, "--dtype", "bfloat16", "--batch", "2", *FAST, "--no-record")
    check_rows(doc, [2], tokens=None)
    assert doc["dtype"] == "bfloat16"


@pytest.mark.slow
def test_compile_on_the_cpu() -> None:
    doc = bench_json(VIT, "--device", "cpu", "--compile", "--batch", "2", *FAST, "--no-record")
    check_rows(doc, [2], tokens=None)
    assert (doc["compile"], doc["compile_mode"]) == (True, "default")


# -------------------------------------------------------------------------------- bad input


def test_unknown_spec_file() -> None:
    fails("no-such-spec.json", "--no-record", message="no such file: no-such-spec.json")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch", "0"], "batch sizes must be whole numbers >= 1, not 0"),
        (["--batch", "2", "-1"], "batch sizes must be whole numbers >= 1, not -1"),
        (["--iters", "0"], "--iters must be >= 1, not 0"),
        (["--warmup", "-1"], "--warmup must be >= 0, not -1"),
        (["--seq", "257"], "--seq 257 is longer than input 'ids' takes: its max_len is 256"),
        (["--seq", "0"], "--seq must be >= 1, not 0"),
        (["--cuda-graphs", "--device", "cpu"], "--cuda-graphs captures CUDA kernels"),
        (["--cuda-graphs", "--mode", "train"], "--cuda-graphs is inference only here"),
        (["--mode", "backprop"], "'backprop' is not one of 'infer', 'train'"),
    ],
)
def test_bad_settings_exit_2(args: list[str], message: str, url: str, tmp_path: Path) -> None:
    fails(GPT, *args, "--registry", url, message=message)
    assert not (tmp_path / "registry.db").exists()


def test_seq_on_a_spec_without_sequences() -> None:
    fails(VIT, "--seq", "8", "--no-record", message="takes none (its inputs: image (image)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_cuda_device() -> None:
    fails(VIT, "--device", "cuda", "--no-record", message="torch sees no CUDA device")


def test_capture_refuses_cpu_tensors() -> None:
    model = compile_spec(VIT, seed=0)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="must be CUDA tensors"):
            capture_cuda_graph(model, model.example_inputs(batch=1))
    else:
        with pytest.raises(ValueError, match="need a CUDA device"):
            capture_cuda_graph(model, model.example_inputs(batch=1))


# ------------------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("spec", [VIT, GPT])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_eager_and_cuda_graphs(spec: str, dtype: str) -> None:
    seq = ["--seq", "16"] if spec == GPT else []
    eager = bench_json(spec, "--device", "cuda", "--dtype", dtype, "--batch", "1", "8", *seq,
                       *FAST, "--no-record")  # fmt: skip
    graphs = bench_json(spec, "--device", "cuda", "--dtype", dtype, "--batch", "1", "8", *seq,
                        "--cuda-graphs", *FAST, "--no-record")  # fmt: skip
    for doc in (eager, graphs):
        check_rows(doc, [1, 8], tokens=16 if spec == GPT else None)
        assert doc["device"].startswith("cuda") and doc["dtype"] == dtype
        assert all(row["peak_mem_mb"] > 0 for row in doc["rows"])
    assert graphs["cuda_graphs"] and graphs["compile_mode"] is None


@pytest.mark.gpu
@CUDA
def test_cuda_graph_replays_the_forward() -> None:
    model = compile_spec(VIT, device="cuda", seed=0).eval()
    inputs = model.example_inputs(batch=4)
    replay = capture_cuda_graph(model, inputs)
    other = model.example_inputs(batch=4, seed=1)
    inputs["image"].copy_(other["image"])
    out = replay()
    with torch.inference_mode():
        expected = model(**other)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, expected)


@pytest.mark.gpu
@pytest.mark.slow
@CUDA
def test_cuda_compile_reduce_overhead_and_train() -> None:
    doc = bench_json(VIT, "--device", "cuda", "--compile", "--cuda-graphs", "--batch", "8",
                     *FAST, "--no-record")  # fmt: skip
    check_rows(doc, [8], tokens=None)
    assert doc["compile_mode"] == "reduce-overhead"
    doc = bench_json(VIT, "--device", "cuda", "--mode", "train", "--dtype", "bfloat16",
                     "--batch", "8", *FAST, "--no-record")  # fmt: skip
    check_rows(doc, [8], tokens=None)
