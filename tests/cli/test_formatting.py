"""``cli/formatting``: one number format for the CLI's summaries (``arch compile``, ``arch
bench``) and the values, sizes and JSON every ``arch runs`` command prints alike."""

from __future__ import annotations

import math

from archlab.cli import bench_commands, formatting, spec_commands
from archlab.cli.formatting import si


def test_si_suffixes_and_three_significant_digits_below_a_thousand() -> None:
    assert si(12_345_678) == "12.35M" and si(2.5e9) == "2.50G" and si(1_000) == "1.00K"
    assert si(523.75) == "524" and si(12.5) == "12.5" and si(0) == "0"


def test_compile_and_bench_print_numbers_alike() -> None:
    assert spec_commands.si is bench_commands.si is si


def test_metric_values_means_and_counts() -> None:
    assert formatting.num(None) == "-" and formatting.num(math.nan) == "nan"
    assert formatting.num(0.123456) == "0.1235" and formatting.num(3) == "3"
    assert formatting.mean_std(0.5, 0.01) == "0.5 ± 0.01"
    assert formatting.mean_std(0.5, None, 1) == "0.5 (1 fold)"  # never a "± 0"
    assert formatting.mean_std(0.5, None) == "0.5"
    assert formatting.count(None) == "-" and formatting.count(4) == "4"


def test_sizes_values_and_cells() -> None:
    assert formatting.size(512) == "512 B"
    assert formatting.size(2048) == "2.0 KiB"
    assert formatting.size(3 * 1024**3) == "3.0 GiB"
    assert formatting.size(5 * 1024**4) == "5120.0 GiB"
    assert formatting.value_text("adamw") == "adamw" and formatting.value_text(2.0) == "2"
    assert formatting.value_text(0.1234567) == "0.1235"
    assert formatting.value_text([1, math.inf]) == '[1, "inf"]'
    assert formatting.cell(None) == "-" and formatting.cell(0.25) == "0.25"
    assert formatting.cell({"a": 1}) == '{"a": 1}'
    assert formatting.status_markup("failed") == "[red]failed[/]"
    assert formatting.status_markup("queued") == "queued"
    assert formatting.escape("[bold]x\x1b") == "\\[bold]x\\x1b"


def test_json_output_follows_the_policy() -> None:
    assert formatting.dumps({"x": math.nan}) == '{\n  "x": "nan"\n}'
