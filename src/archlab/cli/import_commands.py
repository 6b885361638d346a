"""``arch import``: a pretrained checkpoint (Hugging Face folder or hub id) as archlab weights with
their spec embedded, checked against the source library when it is installed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from archlab.cli.options import device_option
from archlab.cli.spec_commands import _print_summary
from archlab.textsafe import printable

if TYPE_CHECKING:
    from archlab.specs.models import Spec

#: The largest relative output difference accepted per weight dtype (HF's own conversion scripts
#: accept 1e-3 in float32); beyond it nothing is written.
TOLERANCE = {"float32": 1e-4, "float64": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}


@click.command("import")
@click.argument("source")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the weights here (safetensors, spec embedded: archlab.load_compiled reads it).",
)
@click.option(
    "--spec-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the generated spec (JSON) here.",
)
@click.option(
    "--dtype",
    default="float32",
    show_default=True,
    type=click.Choice(["float32", "bfloat16", "float16", "float64"]),
    help="The weights' dtype.",
)
@device_option("cpu", "cpu, cuda, cuda:N or auto (CUDA when there is one).")
@click.option(
    "--no-verify",
    is_flag=True,
    help="Skip running the source library's model (transformers) on generated inputs to compare.",
)
def import_command(
    source: str,
    output: Path,
    spec_out: Path | None,
    dtype: str,
    device: str,
    no_verify: bool,
) -> None:
    """Import SOURCE, a Hugging Face model folder or hf:org/name, as archlab weights.

    Generates the spec of the checkpoint's config, loads its tensors into the compiled model
    and, unless --no-verify (or transformers is not installed), runs the transformers model of
    the same folder on a generated padded batch and prints the largest output difference; a
    difference beyond the dtype's tolerance is an error and nothing is written. Supported
    model types are listed when another is given.
    """
    from archlab.interop.convert import import_checkpoint
    from archlab.interop.verify import compare, transformers_available

    started = time.perf_counter()
    imported = import_checkpoint(source, device=device, dtype=dtype)
    build_s = time.perf_counter() - started
    model = imported.model
    difference = None
    if not no_verify and transformers_available():
        difference = compare(model, imported.folder, imported.config)
        if difference.relative > TOLERANCE[dtype]:
            raise click.ClickException(
                f"the imported model's outputs differ from {difference.reference}'s by "
                f"{difference.relative:.2e} of their scale (tolerance {TOLERANCE[dtype]:.0e} in "
                f"{dtype}); nothing was written"
            )
    if spec_out is not None:  # the small file first: a failure leaves neither behind
        _write_spec(model.spec, spec_out)
    model.save(output)
    _print_summary(model.summary(), build_s, {}, output)
    if spec_out is not None:
        click.echo(f"wrote the spec to {printable(str(spec_out))}")
    if difference is not None:
        click.echo(
            f"verified against transformers {difference.reference}: largest output difference "
            f"{difference.max_abs:.3e} ({difference.relative:.2e} of the output scale "
            f"{difference.scale:.3g})"
        )
    elif not no_verify:
        click.echo("not verified: transformers is not installed (pip install 'archlab[interop]')")


def _write_spec(spec: Spec, path: Path) -> None:
    """The spec's canonical JSON document, written atomically."""
    import json

    from archlab.files import replace_atomically
    from archlab.specs import canonical_form

    text = json.dumps(canonical_form(spec), indent=2, ensure_ascii=False) + "\n"

    def write(target: str) -> None:
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)

    replace_atomically(path, write)


COMMANDS = [import_command]
