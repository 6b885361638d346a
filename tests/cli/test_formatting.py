"""One number format for the CLI's summaries (``arch compile``, ``arch bench``)."""

from __future__ import annotations

from archlab.cli import bench_commands, spec_commands
from archlab.cli.formatting import si


def test_si_suffixes_and_three_significant_digits_below_a_thousand() -> None:
    assert si(12_345_678) == "12.35M" and si(2.5e9) == "2.50G" and si(1_000) == "1.00K"
    assert si(523.75) == "524" and si(12.5) == "12.5" and si(0) == "0"


def test_compile_and_bench_print_numbers_alike() -> None:
    assert spec_commands.si is bench_commands.si is si
