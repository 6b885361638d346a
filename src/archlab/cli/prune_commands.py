"""``arch prune ...``: what a trained run's token pruning stages do (``runners/prune_show.py``)."""

from __future__ import annotations

from pathlib import Path

import click

from archlab.cli.formatting import dumps
from archlab.cli.options import registry_option


@click.group()
def prune() -> None:
    """Token pruning: look at what a trained run's pruning stages keep."""


@prune.command("show")
@click.argument("run_id", metavar="RUN")
@click.option("--data", "data_source", metavar="SOURCE",
              help="Draw the first N examples of this data [default: the run's own validation "
              "split].")  # fmt: skip
@click.option(
    "-o",
    "--output",
    default="kept.png",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The image to write: .png, .svg or .pdf (by the suffix).",
)
@click.option("--images", "count", type=int, default=6, show_default=True, metavar="N",
              help="How many images to draw, one row each.")  # fmt: skip
@click.option("--no-record", is_flag=True,
              help="Do not record the picture as an eval run of RUN.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (the file, the images, each stage, the eval run) "
              "instead of the text report.")  # fmt: skip
@registry_option
def show(
    run_id: str,
    data_source: str | None,
    output: Path,
    count: int,
    no_record: bool,
    as_json: bool,
    registry_url: str | None,
) -> None:
    """Draw which patches each pruning stage of RUN's best checkpoint keeps.

    One row per image: the image, then one panel per stage with the patches dropped so far
    painted light grey (as in the DynamicViT paper); for ToMe merge stages, the patches merged
    into one token share a colour. Row titles give the label and the prediction. The picture
    is recorded as an eval run linked to RUN (artifact kind kept-patches) unless --no-record.

    \b
    arch prune show RUN                          # 6 images of the run's validation split
    arch prune show RUN --data digits --images 3 -o kept.png
    """
    from archlab.registry import Registry
    from archlab.runners.prune_show import show_run

    with Registry(registry_url, create=False) as registry:  # never creates one
        report = show_run(
            run_id, registry, output=output, data_source=data_source, images=count,
            record=not no_record,
        )  # fmt: skip
    if as_json:
        click.echo(dumps(report.to_dict()))
        return
    panels = report.panels
    click.echo(
        f"wrote {report.path}: {len(panels)} image(s) from {report.source} "
        f"({report.spec_name}), {len(panels.stages)} pruning stage(s)"
    )
    for stage in panels.stages:
        click.echo(f"  {stage.name} ({stage.method}): {stage.describe(0)}")
    if report.eval_run is not None:
        click.echo(f"recorded as eval run {report.eval_run}")


COMMANDS = [prune]
