"""Everyday use of the command line: tables that fit the terminal, text that cannot drive it,
flags described, machine-readable output spelled ``--json`` everywhere, arguments that are not
UTF-8."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from archlab import load_spec
from archlab.cli import cli
from archlab.registry import Registry

ROOT = Path(__file__).parents[2]
VIT = ROOT / "specs/vit-tiny-digits.json"
GPT = ROOT / "specs/gpt-tiny.json"

# every task's metrics, as training logs them, plus the bookkeeping ones
CLASSIFY = {"train_loss": 0.61, "val_loss": 0.52, "val_acc": 0.834, "lr": 3e-4, "epoch_s": 2.5}
SEQ2SEQ = {"train_loss": 0.9, "val_loss": 0.81, "val_token_acc": 0.7712, "lr": 1e-3}
LM = {"train_loss": 2.1, "val_loss": 2.02, "val_ppl": 7.538, "lr": 1e-3}
EVIL = "\x1b]0;owned\x07\x1b[31mred"


def runs(*args: str, columns: int = 200) -> click.testing.Result:
    return CliRunner().invoke(cli, ["runs", *args], env={"COLUMNS": str(columns)})


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Three classify runs with many metrics, a seq2seq and an LM run with fewer, one tagged with
    an escape sequence."""
    url = f"sqlite:///{tmp_path_factory.mktemp('friction') / 'r.db'}"
    vit, gpt = load_spec(VIT), load_spec(GPT)
    with Registry(url) as reg:
        for i in range(3):
            extra = {f"grad_norm_{j}": 1.0 + j for j in range(4)}
            with reg.start_run(vit, {"lr": 3e-4, "seed": i}, tags={"note": EVIL}) as run:
                run.log_metrics({**CLASSIFY, **extra}, step=0)
        with reg.start_run(gpt, {"lr": 1e-3, "task": "seq2seq"}) as run:
            run.log_metrics(SEQ2SEQ, step=0)
        with reg.start_run(gpt, {"lr": 1e-3, "task": "lm"}) as run:
            run.log_metrics(LM, step=0)
    yield url


def _data_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("│")]


@pytest.mark.parametrize("width", [80, 200])
def test_list_fits_the_terminal_and_shows_every_tasks_main_metric(url: str, width: int) -> None:
    result = runs("list", "--registry", url, columns=width)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line) <= width for line in lines)
    header = next(line for line in lines if line.startswith("┃"))
    for column in ("id", "spec", "status", "val_acc", "val_token_acc", "val_ppl"):
        assert f" {column} " in header, (column, header)
    rows = _data_lines(result.stdout)
    assert len(rows) == 5
    cells = [c.strip() for row in rows for c in row.strip("│").split("│")]
    assert sum("…" in c for c in cells) == 0, result.stdout
    for value in ("0.834", "0.7712", "7.538", "vit-tiny-digits", "gpt-tiny", "completed"):
        assert value in result.stdout
    if width == 200:
        assert " kind " in header and " mixup " in header and " grad_norm_3 " in header
    else:
        assert "not shown at 80 columns" in result.stdout  # and names what it left out
        assert "--columns" in result.stdout


@pytest.mark.parametrize("width", [80, 200])
def test_compare_keeps_its_field_names(url: str, width: int) -> None:
    ids = [r["id"] for r in json.loads(runs("list", "--registry", url, "--json").stdout)]
    result = runs("compare", "--registry", url, *ids, "--all", columns=width)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert all(len(line) <= width for line in out.splitlines())
    tables = out.count("┃ field ")
    assert tables >= 1 and (tables == 1) == (width == 200)
    for field in ("status", "spec", "config.lr", "metrics.val_token_acc", "metrics.val_ppl"):
        assert out.count(f"│ {field} ") == tables, field
    assert all(run_id in out for run_id in ids)
    assert "…" not in out
    for value in ("0.834", "0.7712", "7.538", "completed"):
        assert value in out


def test_user_text_reaches_the_terminal_escaped(url: str) -> None:
    ids = [r["id"] for r in json.loads(runs("list", "--registry", url, "--json").stdout)]
    with Registry(url) as reg:
        doc = json.loads(VIT.read_text())
        doc["nodes"]["encoder"]["depth"] = 3  # an architecture of its own, so its name is shown
        named = load_spec(doc).model_copy(update={"name": "\x1b[2Jwiped"})
        with reg.start_run(named, {"lr": 1.0}, tags={"k\x1b[1m": "v"}) as run:
            run.log_metrics({"val_acc": 0.5}, step=0)
    outputs = [
        runs("list", "--registry", url).stdout,
        runs("list", "--registry", url, "--group").stdout,
        runs("show", "--registry", url, ids[-1]).stdout,
        runs("show", "--registry", url, run.id).stdout,
        runs("compare", "--registry", url, ids[-1], run.id, "--all").stdout,
        runs("best", "--registry", url, "--metric", "val_acc", "--group-by", "spec").stdout,
    ]
    for out in outputs:
        assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2Jwiped" in outputs[0] and "\\x1b[2Jwiped" in outputs[3]
    assert "\\x1b]0;owned\\x07" in outputs[2].replace("\n", "")
    assert "tags.k\\x1b[1m" in outputs[3]
    assert "\\x1b[2Jwiped" in outputs[5]


# ------------------------------------------------------------------ train, eval, bench: --json


@pytest.mark.slow  # two folds and an eval: about 15 s on two shared cores
def test_train_json_threads_and_the_config_flags(tmp_path: Path) -> None:
    """train --json prints one object a script reads (no "CV group ..." text to parse); --threads
    is applied and recorded; --min-lr and --workers override the --config file."""
    import torch

    url = f"sqlite:///{tmp_path / 'r.db'}"
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({"min_lr": 1e-4, "workers": 2, "batch_size": 128, "lr": 2e-3}))
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(
            cli,
            ["train", str(VIT), "--registry", url, "--config", str(cfg), "--epochs", "1",
             "--folds", "2", "--min-lr", "1e-6", "--workers", "0", "--threads", "1", "--json"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    doc = json.loads(result.stdout)  # nothing but the JSON object on stdout
    assert doc["spec"]["name"] == "vit-tiny-digits" and len(doc["spec"]["hash"]) == 64
    assert doc["threads"] == 1 and doc["task"] == "classify"
    assert len(doc["runs"]) == 2 and all(r["best_epoch"] == 1 for r in doc["runs"])
    assert all(0 <= r["best"]["val_acc"] <= 1 for r in doc["runs"])
    group = doc["group"]
    assert group["k"] == 2 and group["runs"] == [r["id"] for r in doc["runs"]]
    assert group["aggregates"]["val_acc"]["n"] == 2
    with Registry(url) as reg:
        runs = reg.runs()
        assert {r.id for r in runs} == set(group["runs"])
        assert {r.cv.group for r in runs if r.cv} == {group["id"]}
        for run in runs:
            assert run.config["min_lr"] == 1e-6 and run.config["workers"] == 0
            assert run.config["threads"] == 1
        trained = runs[0].id

    result = CliRunner().invoke(
        cli, ["eval", trained, "--registry", url, "--json", "--threads", "1", "--device", "cpu"]
    )
    torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["evaluates"] == trained and 0 <= doc["metrics"]["eval_acc"] <= 1
    with Registry(url) as reg:
        record = reg.get(doc["run"])
        assert record.config["threads"] == 1 and record.config["device"] == "cpu"


def test_bench_threads_are_applied_and_recorded(tmp_path: Path) -> None:
    import torch

    url = f"sqlite:///{tmp_path / 'r.db'}"
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(
            cli,
            ["bench", str(VIT), "--registry", url, "--threads", "1", "--json", "--iters", "1",
             "--warmup", "0", "--device", "cpu"],
        )  # fmt: skip
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["threads"] == 1
    with Registry(url) as reg:
        assert reg.get(doc["run"]).config["threads"] == 1


# --------------------------------------------------------------------------- help and options


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def _options(path: tuple[str, ...]) -> dict[str, click.Option]:
    return {opt: p for p in _command(path).params if isinstance(p, click.Option) for opt in p.opts}


ALL_COMMANDS = list(_commands(cli))


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "arch")
def test_every_option_is_described(path: tuple[str, ...]) -> None:
    for name, option in _options(path).items():
        assert (option.help or "").strip(), f"arch {' '.join(path)} {name} has no help"


def test_train_shows_every_default_and_the_warm_up() -> None:
    from archlab.runners.config import TrainConfig

    command = _command(("train",))
    ctx = click.Context(command, info_name="train")
    checked = 0
    for option in command.params:
        if not isinstance(option, click.Option):
            continue
        if option.name in TrainConfig.model_fields or option.name in ("compile_model", "threads"):
            record = option.get_help_record(ctx)
            assert record is not None and "default:" in record[1], option.opts
            checked += 1
    from archlab.cli.train_commands import _FLAGS

    assert checked == len(_FLAGS) + 3  # and --fold-seeds, --compile, --threads
    out = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200).stdout
    for flag in ("--min-lr", "--workers", "--threads", "--json"):
        assert flag in out
    assert "[default: 1e-05]" in out and "[default: 30]" in out
    assert "warm" in out and "spends most of its steps warming up" in " ".join(out.split())


MACHINE_READABLE = [("train",), ("eval",), ("validate",), ("compile",), ("bench",)]


def test_json_is_spelled_the_same_everywhere() -> None:
    for path in ALL_COMMANDS:
        options = _options(path)
        fmt = options.get("--format")
        if fmt is not None and isinstance(fmt.type, click.Choice) and "json" in fmt.type.choices:
            assert "--json" in options, f"arch {' '.join(path)} has --format json but no --json"
    for path in MACHINE_READABLE:
        assert "--json" in _options(path), path


def test_json_and_format_agree(url: str) -> None:
    assert json.loads(runs("list", "--registry", url, "--json").stdout) == json.loads(
        runs("list", "--registry", url, "--format", "json").stdout
    )
    clash = runs("list", "--registry", url, "--json", "--format", "csv")
    assert clash.exit_code == 2 and "--json and --format csv" in clash.stderr


def test_validate_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1}')
    result = CliRunner().invoke(cli, ["validate", "--json", str(VIT), str(bad)])
    assert result.exit_code == 2
    good, wrong = json.loads(result.stdout)
    assert good["valid"] and len(good["spec_hash"]) == 64 and good["errors"] == []
    assert (
        not wrong["valid"]
        and {"path": "nodes", "message": "'nodes' is required"} in wrong["errors"]
    )


@pytest.mark.parametrize("path", [("train",), ("eval",), ("bench",), ("compile",)])
def test_device_takes_cuda_n_everywhere(path: tuple[str, ...]) -> None:
    from archlab.cli.options import DEVICE

    option = _options(path)["--device"]
    assert option.type is DEVICE
    assert option.type.convert("cuda:1", option, None) == "cuda:1"
    with pytest.raises(click.BadParameter, match="unknown device 'gpu1'"):
        option.type.convert("gpu1", option, None)


def test_cuda_n_reaches_the_trainer() -> None:
    import torch

    from archlab.compiler.devices import resolve_device
    from archlab.runners.config import TrainConfig

    assert TrainConfig(device="cuda:1").device == "cuda:1"
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="no CUDA device"):
            resolve_device("cuda:1")
    else:
        count = torch.cuda.device_count()
        assert resolve_device("cuda:0") == torch.device("cuda:0")
        with pytest.raises(Exception, match=f"{count} CUDA device"):
            resolve_device(f"cuda:{count}")


def test_registry_and_debug_before_or_after_the_subcommand(url: str, tmp_path: Path) -> None:
    before = CliRunner().invoke(cli, ["--registry", url, "runs", "list", "--json"])
    after = CliRunner().invoke(cli, ["runs", "list", "--json", "--registry", url])
    assert before.exit_code == after.exit_code == 0
    assert len(json.loads(before.stdout)) == len(json.loads(after.stdout)) >= 5
    # the subcommand's own --registry wins
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    Registry(empty).close()  # read-only commands create no registry: make an empty one
    both = CliRunner().invoke(
        cli, ["--registry", url, "runs", "list", "--json", "--registry", empty]
    )
    assert json.loads(both.stdout) == []
    for args in (["--debug", "compile", str(VIT), "--dtype", "float8"],
                 ["compile", str(VIT), "--dtype", "float8", "--debug"]):  # fmt: skip
        result = CliRunner().invoke(cli, args)
        assert type(result.exception).__name__ == "CompileError", args


def test_plot_draws_every_metric_asked_for(url: str, tmp_path: Path) -> None:
    [run] = [r for r in json.loads(runs("list", "--registry", url, "--json").stdout)][-1:]
    out = tmp_path / "curves.png"
    result = runs(
        "plot", "--registry", url, run["id"], "--metric", "val_acc", "--metric", "val_loss",
        "-o", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("val_acc", "val_loss"):
        path = tmp_path / f"curves-{name}.png"
        assert path.read_bytes().startswith(b"\x89PNG") and f"{name} of run" in result.stdout


# ----------------------------------------------------------------------------- invalid UTF-8


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["validate", "spec-\udcff.json"], "spec-\\xff.json"),
        (["compile", "\udce9t\udce9.json"], "\\xe9t\\xe9.json"),
        (["runs", "tag", "abc", "note=caf\udce9", "--registry", "REG"], "note=caf\\xe9"),
        (["runs", "list", "--where", "tags.x == '\udcff'", "--registry", "REG"], "\\xff"),
        (["train", "--tag", "k=\udcff"], "k=\\xff"),
    ],
)
def test_arguments_that_are_not_utf8_exit_2(args: list[str], shown: str, tmp_path: Path) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape)."""
    registry = f"sqlite:///{tmp_path / 'r.db'}"
    result = CliRunner().invoke(cli, [registry if a == "REG" else a for a in args])
    assert result.exit_code == 2, result.output
    assert "is not valid UTF-8" in result.stderr and shown in result.stderr, result.stderr
    assert "Traceback" not in result.output and "UnicodeEncodeError" not in result.output
