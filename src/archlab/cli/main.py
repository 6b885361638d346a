"""``arch``: the root group, error handling and exit codes.

Exit codes: 0 success; 1 a failure while running; 2 bad input (spec, file, flag), reported in one
paragraph without a traceback (``--debug`` shows it); 130 / 143 when ``arch train`` is stopped by
Ctrl-C / SIGTERM (``runners/lifecycle.py``).
"""

from __future__ import annotations

from typing import Any

import click

from archlab.errors import UserInputError
from archlab.textsafe import printable


class UsageProblem(click.ClickException):
    """Bad input a user can fix: printed as one paragraph, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class ArchGroup(click.Group):
    """Turns library errors into messages and exit codes; ``--debug`` re-raises them.

    The root group also reads ``--debug`` wherever it stands (``arch runs list --debug``), and
    refuses arguments that are not valid UTF-8 before any command sees them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            _check_utf8(args)
            end = args.index("--") if "--" in args else len(args)
            if "--debug" in args[:end]:
                args = ["--debug", *(a for a in args[:end] if a != "--debug"), *args[end:]]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if isinstance(exc, UserInputError):
                raise UsageProblem(str(exc)) from None
            click.echo(f"error: {type(exc).__name__}: {printable(str(exc))}", err=True)
            click.echo("(run with arch --debug ... for the traceback)", err=True)
            ctx.exit(1)


def _check_utf8(args: list[str]) -> None:
    """Arguments that are not valid UTF-8 (Python keeps their bytes as lone surrogates) cannot be
    printed, stored or compared: refuse them with a message rather than a UnicodeEncodeError."""
    for position, arg in enumerate(args, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
            raise UsageProblem(
                f"argument {position} ({shown}) is not valid UTF-8; archlab takes spec paths, "
                "run ids, tags and every other argument as UTF-8 text (rename the file, or set a "
                "UTF-8 locale such as LANG=C.UTF-8 where the text came from)"
            ) from None


def _registry_defaults(command: click.Command, url: str) -> dict[str, Any]:
    """A default_map giving every command below ``command`` that takes ``--registry`` the URL
    given before the subcommand (``arch --registry URL runs list``)."""
    out: dict[str, Any] = {}
    if any(p.name == "registry_url" for p in command.params):
        out["registry_url"] = url
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            below = _registry_defaults(sub, url)
            if below:
                out[name] = below
    return out


@click.group(cls=ArchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--debug",
    is_flag=True,
    help="Show tracebacks instead of one-paragraph errors (before or after the subcommand).",
)
@click.option(
    "--registry",
    "registry_url",
    metavar="URL",
    default=None,
    help="The registry of every command below, the same as giving the command --registry URL "
    "(which wins when both are given).",
)
@click.version_option(package_name="archlab", prog_name="arch (archlab)")
@click.pass_context
def cli(ctx: click.Context, debug: bool, registry_url: str | None) -> None:
    """archlab: compile declarative transformer specs into PyTorch modules.

    \b
    arch validate SPEC...    check specs; every problem with its JSON path
    arch compile SPEC        build the module, report shapes, params, FLOPs, kernels
    arch graph SPEC          draw the expanded graph (DOT, Mermaid, SVG, PNG)
    arch schema              print the JSON Schema of the spec language
    arch import SOURCE -o W  a Hugging Face checkpoint as archlab weights, checked
    arch train SPEC          train with cross-validation and mixup, recorded in the registry
    arch eval RUN            evaluate a trained run's checkpoint, recorded as an eval run
    arch bench SPEC          latency, throughput, peak memory per batch size, recorded
    arch generate MODEL|RUN  continue a prompt (text or ids), streaming the tokens
    arch prune show RUN      draw which patches each token pruning stage kept
    arch explain MODEL|RUN   relevance maps: which inputs made the model decide
    arch embed MODEL|RUN     maps of the embeddings, nearest neighbours, kNN quality
    arch export MODEL        write a model as a Hugging Face folder (--to hf DIR)
    arch sweep SWEEP.json    search over spec variants (Optuna), each trial a CV group
    arch runs ...            query the experiment registry
    arch ui                  the registry in a browser (read-only, 127.0.0.1)
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if registry_url is not None:
        ctx.default_map = {**(ctx.default_map or {}), **_registry_defaults(cli, registry_url)}


def _register() -> None:
    from archlab.cli import (
        bench_commands,
        embed_commands,
        explain_commands,
        export_commands,
        generate_commands,
        import_commands,
        prune_commands,
        runs_commands,
        spec_commands,
        sweep_commands,
        train_commands,
        ui_commands,
    )

    for command in [
        *spec_commands.COMMANDS,
        *train_commands.COMMANDS,
        *bench_commands.COMMANDS,
        *generate_commands.COMMANDS,
        *import_commands.COMMANDS,
        *runs_commands.COMMANDS,
        *prune_commands.COMMANDS,
        *explain_commands.COMMANDS,
        *embed_commands.COMMANDS,
        *export_commands.COMMANDS,
        *sweep_commands.COMMANDS,
        *ui_commands.COMMANDS,
    ]:
        cli.add_command(command)


_register()


def main() -> None:
    """Console entry point (``arch`` and ``python -m archlab``)."""
    cli(prog_name="arch")
