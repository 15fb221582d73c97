"""The ``yollava`` command: personalise, chat, recognise, manage concepts, build data, evaluate, serve."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Column, Table

from .data import data_app, pool_app
from ..errors import YollavaError
from .eval import eval_app
from ..paths import DEFAULT_MODEL
from .options import RECIPE_OPTIONS, recipe_options
from ..recipes import RecipeOptions
from .serve import serve_command, users_app

app = typer.Typer(help="Teach a vision-language model your own subjects from a few photos.", no_args_is_help=True)
concepts_app = typer.Typer(help="Manage saved concepts.", no_args_is_help=True)
app.add_typer(concepts_app, name="concepts")
app.add_typer(pool_app, name="pool")
app.add_typer(data_app, name="data")
app.add_typer(eval_app, name="eval")
app.add_typer(users_app, name="users")
app.command("serve")(serve_command)
console = Console()

ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m", help="'pocket' (embedded default), or a local folder / HF-cache id of a supported checkpoint (see `yollava models`).")
ConceptsDirOpt = typer.Option(None, "--concepts-dir", help="Concepts folder (default: $YOLLAVA_HOME/concepts, in the user data dir).")


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(1)


def _engine(model: str, concepts_dir: Path | None):
    from ..api import YoLLaVA

    try:
        return YoLLaVA.from_pretrained(model, concepts_dir)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))


CategoryOpt = typer.Option("object", help="person | object (pets are objects): picks the conversation questions.")
SeedOpt = typer.Option(None, help="Seed (default 0).")


@app.command()
@recipe_options
def personalize(
    name: str = typer.Argument(..., help="Concept name; the model will know the subject as <NAME>."),
    photos: list[Path] = typer.Argument(..., help="3-10 photos of the subject (files or folders)."),
    model: str = ModelOpt,
    concepts_dir: Path = ConceptsDirOpt,
    recipe_options: RecipeOptions = RECIPE_OPTIONS,
    category: str = CategoryOpt,
    pool: list[Path] = typer.Option(None, "--pool", help="Folder(s) of generic photos for negatives (default: the shared pool)."),
    negatives: list[Path] = typer.Option(None, "--negatives", help="Photos (files or folders) WITHOUT the subject: the same rooms "
                                         "with other things in them, your other concepts' photos. Trained as 'no'; helps most "
                                         "where your photos share places with other things."),
    overwrite: bool = typer.Option(False, help="Replace an existing concept of that name."),
    seed: int = SeedOpt,
):
    """Learn NAME from PHOTOS and save it as NAME.safetensors + NAME.json. With --recipe yochameleon (or an ablation:
    yochameleon-no-soft-positives, yochameleon-no-self-prompting, yochameleon-shared-tokens) on a model that draws
    (Janus), the concept also learns to draw its subject (`yollava generate`)."""
    from ..personalize import load_pool, personalize as run

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if recipe_options.recipe.startswith("yochameleon"):
        if negatives:
            _fail("--negatives is not available with the yochameleon recipes yet")
        return _personalize_unified(name, photos, model, concepts_dir, recipe_options, category, pool, overwrite, seed)
    chosen = _recipe(recipe_options, category=category, seed=seed)
    engine = _engine(model, concepts_dir)
    import time

    t0 = time.perf_counter()

    def ready(sig) -> None:  # the concept head is fitted: <name> recognises from now on, while its tokens train
        head = sig.head.info
        console.print(f"<{name}> recognition ready after {time.perf_counter() - t0:.1f}s (concept head: {head.get('kind')}, "
                      f"{head.get('n_negative', 0)} negatives); training its tokens for conversation...", highlight=False)

    try:
        result = run(engine, name, photos, recipe=chosen, pool=load_pool(pool) if pool else None, overwrite=overwrite,
                     on_recognition_ready=ready, negatives=negatives or ())
    except YollavaError as e:
        _fail(str(e))
    from ..who import decision_threshold

    h = result.holdout
    precision = result.concept.meta.get("metrics", {}).get("precision", "?")
    decider = "concept head's threshold" if result.concept.injection == "vision" else "threshold"
    console.print(f"saved <{name}> to {engine.concepts_dir} (recipe {chosen.name}, {result.seconds:.0f}s of training in {precision}, "
                  f"{decider} {decision_threshold(result.concept):.2f}"
                  + (f", calibration weighted acc {h['weighted_accuracy']:.2f}" if h.get("weighted_accuracy") is not None else "") + ")")
    from ..calibration import calibration_advice

    advice = calibration_advice(name, h, len(result.concept.meta.get("source_photos", [])), chosen.name)
    if advice:
        console.print(f"[yellow]note:[/yellow] {advice}", soft_wrap=True, highlight=False)


def _personalize_unified(name, photos, model, concepts_dir, options: RecipeOptions, category, pool, overwrite, seed) -> None:
    """``personalize --recipe yochameleon...``: the recipe's settings, with the flags that mean the same there."""
    from dataclasses import replace

    from ..personalize import load_pool
    from ..train.yochameleon import get_unified_recipe
    from ..yochameleon import UNDERSTANDING_DATA, personalize_unified

    try:
        named = get_unified_recipe(options.recipe)
        changes = {k: v for k, v in (("epochs", options.epochs), ("lr", options.lr), ("batch_size", options.batch_size),
                                     ("seed", seed), ("understanding_tokens", options.k)) if v is not None}
        config = replace(named.train, **changes) if changes else None
        data_changes = {k: v for k, v in (("category", category), ("n_easy_negatives", options.n_easy),
                                          ("n_hard_negatives", options.n_hard)) if v is not None}
        data_changes |= {"conversations": False} if options.no_conversations else {}
        data_changes |= {"hard_negatives": False} if options.no_hard_negatives else {}
        data = replace(UNDERSTANDING_DATA, **data_changes) if data_changes != {"category": "object"} else None
    except ValueError as e:
        _fail(str(e))
    engine = _engine(model, concepts_dir)
    try:
        made = personalize_unified(engine, name, photos, recipe=options.recipe, config=config, data=data,
                                   pool=load_pool(pool) if pool else None, overwrite=overwrite)
    except (YollavaError, ValueError) as e:
        _fail(str(e))
    c = made.concept
    console.print(f"saved <{name}> to {engine.concepts_dir} (recipe {c.meta['recipe']['name']}, {made.result.seconds:.0f}s of "
                  f"training; {len(c.task_tokens('generation'))} generation + {len(c.task_tokens('understanding'))} understanding "
                  f"tokens, {len(made.soft_positives)} soft positives); draw it with: yollava generate {name} \"A photo of <{name}>\"",
                  highlight=False, markup=False)


def _recipe(options: RecipeOptions, category: str | None = None, seed: int | None = None):
    try:
        return options.to_recipe(category=category, seed=seed)
    except ValueError as e:
        _fail(str(e))


@app.command("personalize-many")
@recipe_options
def personalize_many(
    folder: Path = typer.Argument(..., help="A folder of subject folders: FOLDER/<name>/*.jpg, one concept each."),
    model: str = ModelOpt,
    concepts_dir: Path = ConceptsDirOpt,
    recipe_options: RecipeOptions = RECIPE_OPTIONS,
    category: str = CategoryOpt,
    ray: str = typer.Option(None, "--ray", help="Ray cluster address ('auto', 'ray://host:10001', or 'local' for a local instance)."),
    groups: int = typer.Option(None, help="With --ray: how many worker groups (default: one per CPU, at most one per subject)."),
    library_negatives: bool = typer.Option(False, "--library-negatives", help="Each subject trains with the other subjects' photos "
                                           "as photos without it (as personalize --negatives)."),
    overwrite: bool = typer.Option(False),
    seed: int = SeedOpt,
):
    """Learn one concept per subfolder; all train together in shared batches, or spread over Ray workers."""
    from ..many import personalize_many as run

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    chosen = _recipe(recipe_options, category=category, seed=seed)
    try:
        saved = run(model, folder, concepts_dir, recipe=chosen, overwrite=overwrite, ray_address=ray, groups=groups, library=library_negatives)
    except (YollavaError, FileNotFoundError) as e:
        _fail(str(e))
    for name, path in saved.items():
        console.print(f"saved <{name}> -> {path}")


@app.command()
def chat(
    prompt: str = typer.Argument(None, help="Question (may name concepts like <bo>); omit for an interactive session."),
    image: Path = typer.Option(None, "--image", "-i", help="A photo to talk about."),
    concept: list[str] = typer.Option(None, "--concept", "-c", help="Concepts to introduce even if the prompt doesn't name them."),
    model: str = ModelOpt,
    concepts_dir: Path = ConceptsDirOpt,
    max_new_tokens: int = typer.Option(128),
    temperature: float = typer.Option(0.0, help="0 = greedy."),
    who: bool = typer.Option(True, "--who/--no-who", help="With a photo: find your concepts in it first (none named), or tell the "
                             "model what the named concepts' heads see in it (--no-who: the language model alone)."),
):
    """Ask about your concepts, with or without a photo. With a photo and no concept named, the concepts
    found in the photo are introduced first (see `yollava recognize --all`); with concepts named, what their
    concept heads find in the photo is said first ("In this photo: <bo>.")."""
    engine = _engine(model, concepts_dir)

    def answer(text: str, img: Path | None) -> None:
        try:
            if img is not None and who:
                from ..who import chat as who_chat

                out = who_chat(engine, text, img, max_new_tokens=max_new_tokens, temperature=temperature, concepts=concept or [])
                if out.checked:
                    console.print("heads: " + ", ".join(f"<{f.concept}> {'in' if f.present else 'not in'} the photo ({f.p_yes:.2f})"
                                                        for f in out.checked), style="dim", highlight=False)
                elif out.found:
                    console.print("found: " + ", ".join(f"<{f.concept}> ({f.mode} {f.p_yes:.2f})" for f in out.found),
                                  style="dim", highlight=False)
                console.print(out.answer, soft_wrap=True, markup=False, highlight=False)
                return
            for piece in engine.stream_chat(text, image=img, concepts=concept or [], max_new_tokens=max_new_tokens, temperature=temperature):
                console.print(piece, end="", soft_wrap=True, markup=False, highlight=False)
            console.print()
        except YollavaError as e:
            _fail(str(e))

    if prompt is not None:
        return answer(prompt, image)
    console.print("Interactive chat. '/image PATH' sets the photo, '/noimage' clears it, Ctrl-D quits.")
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            return
        if line.startswith("/image "):
            image = Path(line[7:].strip())
        elif line == "/noimage":
            image = None
        elif line:
            answer(line, image)


@app.command()
def generate(
    name: str = typer.Argument(..., help="The concept to draw (its <NAME> may appear in the prompt; it is introduced either way)."),
    prompt: str = typer.Argument(..., help="What to draw, e.g. \"A photo of <bo> on a beach\"."),
    out: Path = typer.Option(Path("image.png"), "--out", "-o", help="Where to write the picture; with -n above 1, NAME-1.png, NAME-2.png, ..."),
    n: int = typer.Option(1, "-n", "--n", min=1, max=16, help="How many pictures."),
    seed: int = typer.Option(0, help="Sampling seed (the same seed, prompt and concept give the same pictures)."),
    guidance: float = typer.Option(None, help="Classifier-free guidance scale (default: the model's own, 5 for Janus; 1 turns it off)."),
    temperature: float = typer.Option(1.0, min=0.0, help="Sampling temperature of the image codes (0: greedy)."),
    model: str = ModelOpt,
    concepts_dir: Path = ConceptsDirOpt,
):
    """Draw <NAME>: generate pictures of a concept trained with --recipe yochameleon, on a model that draws (Janus)."""
    from ..models.catalog import FAMILIES

    if model in {f.model_type for f in FAMILIES if not f.draws} | {"pocket-v1"}:  # built-in and known not to draw: say so at once
        from ..engine.drawing import drawing_models_text

        _fail(f"the model {model!r} reads photos but cannot draw them. Generating images needs a unified model that also "
              f"writes images: {drawing_models_text()}, given with --model PATH (a local folder or Hugging Face cache id); "
              "none is bundled")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        _fail(f"--out {out}: give a .png, .jpg or .webp file name")
    engine = _engine(model, concepts_dir)
    try:
        drawing = engine.generate_image(prompt, n=n, seed=seed, guidance=guidance, temperature=temperature, concepts=[name])
    except (YollavaError, ValueError) as e:
        _fail(str(e))
    paths = [out] if n == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(1, n + 1)]
    out.parent.mkdir(parents=True, exist_ok=True)
    for image, path in zip(drawing.images, paths):
        image.save(path)
    shown = f" (it first recalled {''.join(drawing.self_prompted)})" if drawing.self_prompted else ""
    console.print(f"wrote {', '.join(map(str, paths))}{shown}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def recognize(
    name: str = typer.Argument(..., help="Concept name (with --all: the first photo)."),
    photos: list[Path] = typer.Argument(None, help="Photos (files or folders) to check."),
    all_concepts: bool = typer.Option(False, "--all", help="Who is here: every stored concept present in each photo, best first."),
    model: str = ModelOpt,
    concepts_dir: Path = ConceptsDirOpt,
    threshold: float = typer.Option(None, help="Decision threshold on P(yes) (default: each concept's own)."),
    mode: str = typer.Option("auto", help="auto (the concept head until a concept is trained, then the better mode), head, yollava (the LLM's P(yes)), fused."),
    strategy: str = typer.Option("retrieve", help="With --all: retrieve (prototype index, then verify the top-k) or all (verify every concept)."),
    top_k: int = typer.Option(None, help="With --all: candidates the prototype index hands to verification (default 5)."),
):
    """Is <NAME> in each photo? Prints yes/no, P(yes) and the mode that answered. With --all: who is in each photo."""
    from ..data.builder import expand_photos
    from ..who import DEFAULT_TOP_K, recognize as recognise_one

    engine = _engine(model, concepts_dir)
    try:
        if all_concepts:
            paths = expand_photos([Path(name), *(photos or [])])
            labels, title = photo_labels(paths, console.width // 2)
            table = Table(Column("photo", overflow="fold"), "present (best first)", "P(yes)", "mode", "checked", "seconds", title=title)
            for path, label in zip(paths, labels):
                r = engine.who(path, mode=mode, strategy=strategy, top_k=top_k or DEFAULT_TOP_K, threshold=threshold)
                table.add_row(label, " ".join(f"<{f.concept}>" for f in r.found) or "-",
                              " ".join(f"{f.p_yes:.3f}" for f in r.found), " ".join(sorted({f.mode for f in r.found})),
                              f"{len(r.checked)}/{r.n_concepts}", f"{r.seconds['total']:.2f}")
        else:
            if not photos:
                _fail("give photos to check (or --all PHOTO... to find every concept)")
            paths = expand_photos(photos)
            labels, title = photo_labels(paths, console.width // 2)
            table = Table(Column("photo", overflow="fold"), "answer", "P(yes)", "mode", title=title)
            for path, label in zip(paths, labels):
                r = recognise_one(engine, name, path, mode=mode, threshold=threshold)
                table.add_row(label, r.answer, f"{r.p_yes:.3f}", r.mode)
    except (YollavaError, ValueError) as e:
        _fail(str(e))
    console.print(table)


def photo_labels(paths: list[Path], width: int) -> tuple[list[str], str | None]:
    """How a table names each photo: its path below the folder all of them share (that folder is the
    table's title), cut on the left to ``width`` characters if it is longer; the file name is never cut."""
    import os

    if not paths:
        return [], None
    try:
        shared = Path(os.path.commonpath([str(p.parent) for p in paths]))
    except ValueError:  # relative and absolute paths, or other drives
        shared = None
    labels = []
    for p in paths:
        text = str(p.relative_to(shared)) if shared is not None and shared != Path("") else str(p)
        if len(text) > width:
            parts, kept = Path(text).parts, p.name
            for part in reversed(parts[:-1]):
                if len(part) + len(kept) + 3 > width:
                    break
                kept = f"{part}/{kept}"
            text = kept if kept == text else f"…/{kept}"
        labels.append(text)
    title = None
    if shared is not None and str(shared) not in ("", "."):
        title = str(shared) if len(str(shared)) <= 2 * width else "…" + str(shared)[-(2 * width - 1):]
        title = f"photos in {title}"
    return labels, title


@app.command()
@recipe_options
def demo(
    model: str = ModelOpt,
    concepts_dir: Path = ConceptsDirOpt,
    data_root: Path = typer.Option(None, help="The shared photo data (default: $YOLLAVA_DATA or ../shared/data)."),
    recipe_options: RecipeOptions = RECIPE_OPTIONS,
):
    """The main job: personalise <bo> from its 10 photos, recognise it in new photos, talk about it."""
    from ..demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    chosen = _recipe(recipe_options)
    engine = _engine(model, concepts_dir)
    try:
        run_demo(engine, data_root, chosen, console)
    except YollavaError as e:
        _fail(str(e))


def _version(value: bool):
    if value:
        from importlib.metadata import version

        console.print(f"yollava {version('yollava')}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    device: str = typer.Option(None, "--device", envvar="YOLLAVA_DEVICE", help="auto (CUDA when present, default), cuda, cuda:1, cpu. Applies to every command."),
    dtype: str = typer.Option(None, "--dtype", envvar="YOLLAVA_DTYPE", help="auto (bf16/fp16 on CUDA, fp32 on CPU; default), bf16, fp16, fp32. Concept rows always train in fp32."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the libraries' warnings and loading bars (hidden by default)."),
):
    """Teach a vision-language model your own subjects from a few photos."""
    from ..runtime import configure

    configure(device=device, dtype=dtype, verbose=verbose)


@app.command()
def models():
    """List the model families yollava can personalise, and what was verified for each."""
    from ..models.catalog import FAMILIES, VERIFIED_DETAIL

    table = Table("--model", "family (model_type)", "photo handling", "verified here", title="supported models")
    for f in FAMILIES:
        table.add_row(f.example, f"{f.name} ({f.model_type})", f.photos, f.verified)
    console.print(table)
    console.print(VERIFIED_DETAIL + ".")
    console.print("Any local folder or Hugging Face cache id whose config.json has one of these model_types loads; nothing is downloaded.")
    drawing = ", ".join(f.model_type for f in FAMILIES if f.draws)
    console.print(f"Models that also draw their concepts (yollava personalize --recipe yochameleon, yollava generate): {drawing}; "
                  "none is bundled.", highlight=False)


@app.command()
def doctor():
    """What this machine offers: device, memory, default precision, and which supported models are cached locally."""
    from ..models.catalog import cached_models
    from ..runtime import device_report

    r = device_report()
    console.print(f"torch {r['torch']}, transformers {r['transformers']}, {r['cpu_threads']} CPU threads"
                  + (f", RAM {r['ram_gib']['available']}/{r['ram_gib']['total']} GiB free" if "ram_gib" in r else ""))
    for d in r["devices"]:
        console.print(f"cuda:{d['index']} {d['name']}: {d['free_gib']}/{d['total_gib']} GiB free, bf16 {'yes' if d['bf16'] else 'no'}")
    if not r["devices"]:
        console.print("no CUDA device: models run on the CPU in fp32")
    console.print("CPU bf16 matmuls: " + ("native (recipes with precision 'auto' train pocket's steps in bf16, about 3x faster)"
                                          if r["cpu_native_bf16"] else "emulated (precision 'auto' trains in fp32)"))
    console.print(f"default: --device {r['default_device']} --dtype {r['default_dtype']}")
    cache, found = cached_models()
    console.print(f"Hugging Face cache: {cache}")
    for model_id, model_type, size in found:
        console.print(f"  {model_id}  ({model_type}, {size / 2**30:.1f} GiB)", highlight=False)
    if not found:
        console.print("  no supported model cached (see `yollava models`)")


@concepts_app.command("list")
def concepts_list(concepts_dir: Path = ConceptsDirOpt):
    """List saved concepts."""
    from ..concepts import list_concepts
    from ..paths import default_concepts_dir

    from ..who import PENDING_DIR

    folder = concepts_dir or default_concepts_dir()
    table = Table("name", "k", "base model", "held-back weighted acc", "recognises with", title=str(folder))
    ready = list_concepts(folder)
    names = {m["name"] for m in ready}
    pending = [m for m in list_concepts(folder / PENDING_DIR) if m["name"] not in names]
    for meta in ready + pending:
        acc = meta.get("metrics", {}).get("holdout", {}).get("weighted_accuracy")
        how = ("concept head only (still training)" if meta.get("stage") == "recognition"
               else "head + tokens" if meta.get("visual") else "tokens (no visual signature)")
        table.add_row(f"<{meta['name']}>", str(meta.get("k", "?")), str(meta.get("base_model", {}).get("model_id", meta.get("error", "?"))),
                      "-" if acc is None else f"{acc:.2f}", how)
    console.print(table)


@concepts_app.command("show")
def concepts_show(name: str, concepts_dir: Path = ConceptsDirOpt):
    """Print a concept's metadata."""
    import json

    from ..concepts import read_meta
    from ..paths import default_concepts_dir

    try:
        meta = read_meta(concepts_dir or default_concepts_dir(), name)
    except YollavaError as e:
        _fail(str(e))
    meta.get("metrics", {}).pop("history", None)
    console.print_json(json.dumps(meta, default=str))


@concepts_app.command("rm")
def concepts_rm(name: str, concepts_dir: Path = ConceptsDirOpt):
    """Delete a concept file (tensors and metadata)."""
    from ..concepts import delete_concept
    from ..paths import default_concepts_dir
    from ..who import PENDING_DIR

    folder = concepts_dir or default_concepts_dir()
    removed = False
    for d in (folder, folder / PENDING_DIR):  # the concept, and its recognition-only copy if training never finished
        try:
            delete_concept(d, name)
            removed = True
        except YollavaError as e:
            error = str(e)
    if not removed:
        _fail(error.replace(f" in {folder / PENDING_DIR}", f" in {folder}"))
    console.print(f"removed <{name}>")
