"""Options several commands share, declared once: ``--device``, ``--threads``, ``--registry``
(and the registry it names), ``--where``, ``--format``/``--json``, durations and tags."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click
from click.core import ParameterSource

if TYPE_CHECKING:
    from archlab.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class Device(click.ParamType):
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``: the same spelling on every command."""

    name = "device"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip().lower()
        if not _DEVICE.fullmatch(text):
            self.fail(
                f"unknown device {value!r}; use auto (CUDA when there is one), cpu, cuda or "
                "cuda:N (the N-th GPU, from 0)",
                param,
                ctx,
            )
        return text

    def get_metavar(self, param: click.Parameter, *args: Any, **kwargs: Any) -> str:
        return "[auto|cpu|cuda|cuda:N]"


DEVICE = Device()


def device_option(default: str | None, help: str) -> Callable[[F], F]:
    return click.option(
        "--device",
        type=DEVICE,
        default=default,
        show_default=default is not None,
        help=help,
    )


def threads_option(f: F) -> F:
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="CPU threads for torch [default: the CPUs this process may use: its affinity mask, "
        "capped by its cgroup's CPU quota; OMP_NUM_THREADS when set]. Recorded in the run.",
    )(f)


# ------------------------------------------------------------------------------- the registry


def registry_option(f: F) -> F:
    return click.option(
        "--registry",
        "registry_url",
        metavar="URL",
        default=None,
        help="Registry database: sqlite:///PATH, postgresql://USER@HOST/DB or a SQLite file path "
        "[default: $ARCHLAB_REGISTRY, else .archlab/registry.db in the nearest folder upwards "
        "with an .archlab/ folder, else ~/.local/share/archlab/registry.db].",
    )(f)


@contextlib.contextmanager
def open_registry(url: str | None, **kwargs: Any) -> Iterator[Registry]:
    """The registry at ``url`` (as ``archlab.registry.locate`` finds it), closed afterwards; never
    created here. A missing registry, a bad URL or an unreachable database raises RegistryError
    (exit code 2)."""
    from archlab.registry import Registry

    with Registry(url, create=False, **kwargs) as registry:
        yield registry


def registry_source(registry: Registry) -> str:
    """``registry URL (how it was found)``: what a command that found nothing says it read."""
    return f"registry {registry.location.describe()}"


def where_option(f: F) -> F:
    return click.option(
        "--where",
        metavar="EXPR",
        default=None,
        help="Only the runs matching EXPR, e.g. \"status == 'completed' and metrics.acc > 0.9\". "
        "Fields: status, kind, id, started, ended, metrics.NAME (final), best.NAME, "
        "mean.NAME / std.NAME (the CV group's), config.KEY[.KEY], tags.KEY, mixup.FIELD, "
        "cv.k / cv.fold / cv.group, spec.name / spec.hash; and, or, not, in, like.",
    )(f)


def format_option(choices: Sequence[str], default: str | None = None) -> Callable[[F], F]:
    """``--format CHOICE`` and ``--json``, its short form (every command spells machine-readable
    output ``--json``); the command receives ``fmt``."""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def command(*args: Any, as_json: bool, **kwargs: Any) -> Any:
            if as_json:
                ctx = click.get_current_context()
                given = ctx.get_parameter_source("fmt") is not ParameterSource.DEFAULT
                if given and kwargs["fmt"] != "json":
                    raise click.UsageError(f"--json and --format {kwargs['fmt']}: give one of them")
                kwargs["fmt"] = "json"
            return f(*args, **kwargs)

        command = click.option(
            "--json", "as_json", is_flag=True, help="Print JSON (the same as --format json)."
        )(command)
        return click.option(  # type: ignore[return-value]
            "--format",
            "fmt",
            type=click.Choice(list(choices)),
            default=default,
            show_default=default is not None,
            help="Output format.",
        )(command)

    return decorate


class Duration(click.ParamType):
    """``30s``, ``5m``, ``2h``, ``1d`` or plain seconds, as a float of seconds."""

    name = "duration"
    _UNITS: ClassVar[dict[str, float]] = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    _PATTERN = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*", re.IGNORECASE)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float):
            return float(value)
        match = self._PATTERN.fullmatch(str(value))
        if match is None:
            self.fail(
                f"{value!r} is not a duration; write 30s, 5m, 2h, 1d or plain seconds",
                param,
                ctx,
            )
        return float(match.group(1)) * self._UNITS[match.group(2).lower()]


def parse_tags(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` arguments as a dict; anything else exits 2."""
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"{pair!r} is not KEY=VALUE (e.g. note=baseline)", param_hint="KEY=VALUE"
            )
        tags[key.strip()] = value
    return tags
