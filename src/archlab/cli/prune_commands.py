"""``arch prune ...``: what a trained run's token pruning stages do (``runners/prune_show.py``)."""

from __future__ import annotations

from pathlib import Path

import click

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
@registry_option
def show(
    run_id: str, data_source: str | None, output: Path, count: int, registry_url: str | None
) -> None:
    """Draw which patches each pruning stage of RUN's best checkpoint keeps.

    One row per image: the image, then one panel per stage with the patches dropped so far
    painted light grey (as in the DynamicViT paper); for ToMe merge stages, the patches merged
    into one token share a colour. Row titles give the label and the prediction.

    \b
    arch prune show RUN                          # 6 images of the run's validation split
    arch prune show RUN --data digits --images 3 -o kept.png
    """
    from archlab.registry import Registry
    from archlab.runners.prune_show import show_run

    with Registry(registry_url, create=False) as registry:  # reads only: never creates one
        report = show_run(run_id, registry, output=output, data_source=data_source, images=count)
    panels = report.panels
    click.echo(
        f"wrote {report.path}: {len(panels)} image(s) from {report.source} "
        f"({report.spec_name}), {len(panels.stages)} pruning stage(s)"
    )
    for stage in panels.stages:
        click.echo(f"  {stage.name} ({stage.method}): {stage.describe(0)}")


COMMANDS = [prune]
