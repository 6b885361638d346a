"""``arch import``: a pretrained checkpoint (Hugging Face folder or hub id, timm hub folder or
state-dict file) as archlab weights with their spec embedded, checked against the source library
when it is installed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from archlab.cli.options import device_option
from archlab.cli.spec_commands import _print_summary
from archlab.textsafe import printable

if TYPE_CHECKING:
    from archlab.interop.convert import Imported
    from archlab.interop.verify import Difference
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
    "--timm-model",
    metavar="NAME",
    help="timm's model name (vit_small_patch16_224, deit_small_patch16_224, ...): needed when "
    "SOURCE is a bare state-dict file (.safetensors, .pth, .bin); with a timm hub folder it must "
    "name the folder's own architecture (a pretrained tag aside).",
)
@click.option(
    "--no-verify",
    is_flag=True,
    help="Skip running the source library's model (transformers or timm) on generated inputs "
    "to compare.",
)
def import_command(
    source: str,
    output: Path,
    spec_out: Path | None,
    dtype: str,
    device: str,
    timm_model: str | None,
    no_verify: bool,
) -> None:
    """Import SOURCE, a Hugging Face model folder or hf:org/name, a timm hub folder (or
    hf:timm/NAME), or a timm state-dict file with --timm-model, as archlab weights.

    Generates the spec of the checkpoint's config, loads its tensors into the compiled model
    and, unless --no-verify (or the source library is not installed), runs the transformers
    (or timm) model of the same weights on generated inputs and prints the largest output
    difference; a difference beyond the dtype's tolerance is an error and nothing is written.
    Supported model types are listed when another is given. For timm checkpoints, which carry
    no depth or width, it prints which settings came from the model name and which from the
    tensor shapes.
    """
    from archlab.interop.convert import import_checkpoint

    started = time.perf_counter()
    imported = import_checkpoint(source, device=device, dtype=dtype, timm_model=timm_model)
    build_s = time.perf_counter() - started
    model = imported.model
    difference, library = None, "timm" if imported.timm is not None else "transformers"
    if not no_verify:
        difference = _verify(imported)
    if difference is not None and difference.relative > TOLERANCE[dtype]:
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
    if imported.timm is not None:
        click.echo(f"timm {printable(imported.timm.name)} ({imported.timm.architecture}):")
        for line in imported.timm.describe():
            click.echo(f"  {printable(line)}")
    if difference is not None:
        click.echo(
            f"verified against {library} {printable(difference.reference)}: largest output "
            f"difference {difference.max_abs:.3e} ({difference.relative:.2e} of the output "
            f"scale {difference.scale:.3g})"
        )
    elif not no_verify and library == "timm":
        click.echo("not verified: the check against timm was skipped because timm is not installed")
    elif not no_verify:
        click.echo("not verified: transformers is not installed (pip install 'archlab[interop]')")


def _verify(imported: Imported) -> Difference | None:
    """The difference against the source library's model, or None when it is not installed."""
    from archlab.interop.timm_source import compare_timm, timm_available
    from archlab.interop.verify import compare, transformers_available

    if imported.timm is not None:
        return compare_timm(imported.model, imported.timm) if timm_available() else None
    if not transformers_available():
        return None
    return compare(imported.model, imported.folder, imported.config)


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
