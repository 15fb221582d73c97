"""``yollava pool ...`` and ``yollava data ...``: Typer sub-apps the main CLI mounts."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from .options import RECIPE_OPTIONS, recipe_options
from ..errors import YollavaError
from ..paths import cache_home, default_data_root
from ..recipes import RecipeOptions

pool_app = typer.Typer(help="The image pool (negatives) and its nearest-neighbour index.", no_args_is_help=True)
data_app = typer.Typer(help="Build and inspect a concept's training data.", no_args_is_help=True)
# (the callbacks keep `index` a subcommand even when an app has one command)


@pool_app.callback()
def _pool_group():
    """The image pool (negatives) and its nearest-neighbour index."""


@data_app.callback()
def _data_group():
    """Build and inspect a concept's training data."""


TRAINING_SET_FILE = "training_set.json"
CONTACT_SHEET_FILE = "contact_sheet.png"


def default_data_dir() -> Path:
    return cache_home() / "data"


def default_pool_dirs() -> list[Path]:
    return [default_data_root() / "pool"]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


def _index(dirs: list[Path], index_dir: Path | None):
    from ..data.pool import ImagePool

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        pool = ImagePool.build_or_update(dirs, index_dir)
    except (FileNotFoundError, YollavaError) as e:
        _fail(str(e))
    r = pool.report
    typer.echo(f"pool {pool.index_dir}: {r.total} photos ({len(r.added)} added, {len(r.removed)} removed, "
               f"{len(r.skipped)} unreadable skipped) in {r.seconds:.1f} s")
    for path, reason in r.skipped:
        typer.echo(f"  skipped {path}: {reason}")
    return pool


@pool_app.command("index")
def pool_index(
    dirs: list[Path] = typer.Argument(..., help="Folders of photos (searched recursively)."),
    index_dir: Path = typer.Option(None, "--index-dir", help="Where the index lives (default: $YOLLAVA_CACHE/pool)."),
):
    """Embed the photos under DIR... and add them to the pool index (only new files are embedded)."""
    _index(dirs, index_dir)


@data_app.command("build")
@recipe_options
def data_build(
    name: str = typer.Argument(..., help="Concept name, e.g. bo (identifier <bo>)."),
    photos: list[Path] = typer.Argument(..., help="Photos of the subject, or folders of them."),
    out: Path = typer.Option(None, "--out", help="Data folder (default: $YOLLAVA_CACHE/data); writes OUT/NAME/training_set.json."),
    recipe_options: RecipeOptions = RECIPE_OPTIONS,
    category: str = typer.Option("object", "--category", help="person | object (pets are objects): picks the conversation questions."),
    pool: list[Path] = typer.Option(None, "--pool", help="Pool photo folder(s) (default: the shared data's pool/)."),
    index_dir: Path = typer.Option(None, "--index-dir", help="Pool index folder (default: $YOLLAVA_CACHE/pool)."),
    model: str = typer.Option("", "--model", help="Base model that answers the conversation questions."),
    seed: int = typer.Option(0, "--seed"),
):
    """Build the training set for NAME from PHOTOS (recognition Q/A, negatives, conversations), as a recipe would
    (its training settings, --epochs and the like, are accepted and not used here)."""
    from ..personalize import ConceptPipeline

    try:
        recipe = recipe_options.to_recipe(category=category, seed=seed)
    except ValueError as e:
        _fail(str(e))
    image_pool = _index(pool or default_pool_dirs(), index_dir) if recipe.data.needs_pool else None
    engine = None
    if recipe.data.asks_base_model:  # the base model answers them, as personalize asks it (batched, the model itself)
        from ..engine import Engine

        engine = Engine.from_pretrained(model) if model else Engine.from_pretrained()
    try:
        ts = ConceptPipeline(engine, recipe, pool=image_pool).training_set(name, photos)
    except (YollavaError, ValueError) as e:
        _fail(str(e))
    folder = (out or default_data_dir()) / ts.name.strip("<>")
    path = ts.save(folder / TRAINING_SET_FILE)
    typer.echo(f"{ts.name}: " + ", ".join(f"{k} {v}" for k, v in ts.counts.items()) + f" -> {path}")
    for p, reason in ts.skipped:
        typer.echo(f"  skipped {p}: {reason}")


@data_app.command("show")
def data_show(
    name: str = typer.Argument(..., help="Concept name."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Data folder (default: $YOLLAVA_CACHE/data)."),
):
    """Print the counts of NAME's training set and write its contact sheet PNG."""
    from ..data.contact_sheet import contact_sheet, summary
    from ..data.training_set import TrainingSet

    folder = (data_dir or default_data_dir()) / name.strip("<>")
    path = folder / TRAINING_SET_FILE
    if not path.is_file():
        _fail(f"no training set at {path}; run `yollava data build {name} PHOTOS...` first")
    ts = TrainingSet.load(path)
    for key, value in summary(ts).items():
        typer.echo(f"{key}: {value}")
    typer.echo(f"contact sheet: {contact_sheet(ts, folder / CONTACT_SHEET_FILE)}")
