"""``yollava eval ...``: the benchmarks as a Typer sub-app (the main CLI mounts ``eval_app`` as ``eval``).

Every command writes ``--out`` (JSON) with ``.md`` and ``.png`` beside it, and keeps its working
state in a run folder (``--run-dir``, default ``<out stem>.run/`` beside ``--out``): concepts trained
for the benchmark, model-written descriptions, and one JSONL line per finished (method, subject),
so running the same command again resumes and skips what is done.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

import typer
from typer.core import TyperCommand

from .options import RECIPE_OPTIONS, recipe_options
from ..errors import YollavaError
from ..paths import DEFAULT_MODEL
from ..recipes import RecipeOptions

eval_app = typer.Typer(help="Benchmarks and baselines: recognition, question answering, caption recall, no forgetting, generation.",
                       no_args_is_help=True)



class _BenchmarkCommand(TyperCommand):
    """A benchmark command (named like its task) whose ``--methods`` help lists the methods the task accepts
    and its default from the method registry (:mod:`yollava.eval.registry`). Filled in when help is shown,
    so starting the CLI does not import the methods."""

    def format_help(self, ctx, formatter):
        from ..eval.registry import default_methods, method_names

        for param in self.params:
            if param.name == "methods":
                param.help = (f"Comma-separated, from: {', '.join(method_names(self.name))} "
                              f"(default: {','.join(default_methods(self.name))}).")
        return super().format_help(ctx, formatter)


MethodsOpt = typer.Option(None, "--methods", help="Comma-separated registered methods (default: the task's defaults).")


@eval_app.callback()
def _eval_group():
    """Benchmarks and baselines: recognition, question answering, caption recall, no forgetting."""


ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m", help="'pocket' (embedded default), or a local folder / HF-cache id of a checkpoint of any of the supported families (see `yollava models`).")
DataRootOpt = typer.Option(None, "--data-root", help="The shared photo data (default: $YOLLAVA_DATA or ../shared/data).")
RunDirOpt = typer.Option(None, "--run-dir", help="Working folder (concepts, descriptions, records.jsonl); default: <out stem>.run beside --out.")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _engine(model: str):
    from ..engine import Engine

    try:
        engine = Engine.from_pretrained(model)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    engine.adapter.use_exact_generation()  # evaluations answer with the model itself, not chat's faster runtime
    return engine


def _pool_fn(pool_dirs: list[Path] | None, index_dir: Path | None):
    def load():
        from ..personalize import load_pool

        return load_pool(list(pool_dirs) if pool_dirs else None, index_dir, progress=True)

    return load


def _split(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def _recipe(options: RecipeOptions, seed: int):
    """The named recipe with this command's overrides (and ``--seed``, which also seeds the split)."""
    try:
        return options.to_recipe(seed=seed)
    except ValueError as e:
        _fail(str(e))


def _command_line() -> str:
    """The command as typed, for the report (empty when called in-process, e.g. by tests)."""
    if not sys.argv:
        return ""
    prog, args = Path(sys.argv[0]), " ".join(shlex.quote(a) for a in sys.argv[1:])
    if prog.name == "yollava":
        return f"yollava {args}"
    if prog.name == "__main__.py" and prog.parent.name == "eval":
        return f"python -m yollava.eval {args}"
    return ""


def _finish(results: dict, out: Path, title: str, command: str | None) -> None:
    from ..eval.report import write_report

    results["title"] = title
    if command:
        results["command"] = command
    paths = write_report(results, out, title)
    typer.echo("wrote " + ", ".join(map(str, paths)))


def _default_run_dir(out: Path, run_dir: Path | None) -> Path:
    return run_dir or out.parent / f"{out.stem}.run"


PoolOpt = typer.Option(None, "--pool", help="Folder(s) of generic photos for negatives (default: the shared pool).")
IndexDirOpt = typer.Option(None, "--index-dir", help="Pool index folder (default: in the cache).")
CaptionTokOpt = typer.Option(96, "--caption-tokens", help="text-model: max tokens per training-photo caption.")
SummaryTokOpt = typer.Option(48, "--summary-tokens", help="text-model: max tokens of the summarised description.")
ReuseOpt = typer.Option(None, "--reuse", help="Other run folder(s) whose concepts / model-written descriptions to reuse when made from the same photos with the same settings, and whose finished records to reuse when made under exactly the same protocol.")
ThreadsOpt = typer.Option(None, "--threads", help="torch CPU threads (on a busy shared machine 1 can be several times faster than the default).")


def _benchmark(task_name: str, methods: str, make_task, title, *, out: Path, run_dir: Path | None, model: str, options: RecipeOptions,
               seed: int, pool: list[Path] | None, index_dir: Path | None, caption_tokens: int, summary_tokens: int, quiet: bool,
               threads: int | None, reuse: list[Path] | None) -> None:
    """What every benchmark command does: recipe, methods and task from the flags, then the one driver, then the report."""
    from ..eval.driver import run_benchmark
    from ..eval.registry import default_methods, method_names, parse_methods

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    chosen = _recipe(options, seed)
    try:
        names = parse_methods(methods or list(default_methods(task_name)), method_names(task_name))
        task = make_task()
    except (YollavaError, ValueError, KeyError, FileNotFoundError) as e:
        _fail(str(e))
    _threads(threads)
    engine = _engine(model)
    try:
        results = run_benchmark(task, engine, names, _default_run_dir(out, run_dir), train=chosen.train, data=chosen.data, recipe=chosen.name,
                                pool_fn=_pool_fn(pool, index_dir), caption_tokens=caption_tokens, summary_tokens=summary_tokens,
                                progress=not quiet, echo=typer.echo, reuse_from=reuse)
    except (YollavaError, ValueError, KeyError, FileNotFoundError) as e:
        _fail(str(e))
    _finish(results, out, title(task), _command_line())


@eval_app.command("recognition", cls=_BenchmarkCommand)
@recipe_options
def recognition(
    dataset: str = typer.Option("bo", "--dataset", "-d", help="bo | myvlm | a folder DIR/<subject>/*.jpg"),
    methods: str = MethodsOpt,
    out: Path = typer.Option(..., "--out", "-o", help="results.json (results.md and results.png are written beside it)."),
    model: str = ModelOpt,
    run_dir: Path = RunDirOpt,
    data_root: Path = DataRootOpt,
    subjects: str = typer.Option(None, "--subjects", help="Comma-separated subject names (default: all)."),
    max_subjects: int = typer.Option(None, "--max-subjects", help="Only the first N subjects (after --subjects)."),
    train_per_subject: int = typer.Option(4, "--train-per-subject", help="myvlm/DIR: training photos per subject (seeded split)."),
    seed: int = typer.Option(0, "--seed", help="Split, pool held-out negatives and training seed."),
    pool_negatives: int = typer.Option(None, "--pool-negatives", help="Random pool photos held out as test negatives (default: 20 for bo, 0 otherwise)."),
    max_negatives: int = typer.Option(None, "--max-negatives", help="At most N test negatives per subject (seeded sample, same for every method)."),
    pool_hard_negatives: int = typer.Option(None, "--pool-hard-negatives", help="Per subject, pool photos nearest its test photos held out as test negatives (default: 10 for bo, 0 otherwise)."),
    library_negatives: bool = typer.Option(False, "--library-negatives", help="myvlm/DIR: each subject also trains with the other "
                                           "subjects' training photos as photos without it (personalize --negatives); test photos untouched."),
    recipe_options: RecipeOptions = RECIPE_OPTIONS,
    pool: list[Path] = PoolOpt, index_dir: Path = IndexDirOpt,
    caption_tokens: int = CaptionTokOpt, summary_tokens: int = SummaryTokOpt,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    threads: int = ThreadsOpt,
    reuse: list[Path] = ReuseOpt,
):
    """Is <subject> in this photo? Every method on the same photos; weighted accuracy and ROC-AUC."""
    from ..eval.datasets import load_dataset
    from ..eval.recognition import RecognitionTask

    is_bo = dataset == "bo"
    if library_negatives and is_bo:
        _fail("--library-negatives needs a dataset of several subjects (myvlm or a folder); bo has one")

    def make_task():
        data = load_dataset(dataset, data_root, train_per_subject, seed)
        return RecognitionTask(
            data.with_library_negatives() if library_negatives else data, subjects=_split(subjects), max_subjects=max_subjects,
            pool_negatives=(20 if is_bo else 0) if pool_negatives is None else pool_negatives,
            pool_hard_negatives=(10 if is_bo else 0) if pool_hard_negatives is None else pool_hard_negatives,
            max_negatives=max_negatives, seed=seed, data_root=data_root,
            protocol_extra={"train_per_subject": train_per_subject} if not is_bo else None)

    _benchmark("recognition", methods, make_task, lambda task: f"Recognition: {task.dataset.name}", out=out, run_dir=run_dir, model=model,
               options=recipe_options, seed=seed, pool=pool, index_dir=index_dir, caption_tokens=caption_tokens,
               summary_tokens=summary_tokens, quiet=quiet, threads=threads, reuse=reuse)


@eval_app.command("qa", cls=_BenchmarkCommand)
@recipe_options
def qa(
    kind: str = typer.Option("text", "--kind", help="text (400 text-only questions) | visual (questions on <bo>'s test photos)."),
    methods: str = MethodsOpt,
    out: Path = typer.Option(..., "--out", "-o"),
    model: str = ModelOpt,
    run_dir: Path = RunDirOpt,
    data_root: Path = DataRootOpt,
    subjects: str = typer.Option(None, "--subjects"),
    max_subjects: int = typer.Option(None, "--max-subjects"),
    seed: int = typer.Option(0, "--seed"),
    recipe_options: RecipeOptions = RECIPE_OPTIONS,
    pool: list[Path] = PoolOpt, index_dir: Path = IndexDirOpt,
    caption_tokens: int = CaptionTokOpt, summary_tokens: int = SummaryTokOpt,
    quiet: bool = typer.Option(False, "--quiet"),
    threads: int = ThreadsOpt,
    reuse: list[Path] = ReuseOpt,
):
    """Yo'LLaVA two-choice questions, scored by P("A") vs P("B") as the first answer token."""
    from ..eval.qa import QATask

    _benchmark("qa", methods, lambda: QATask(kind, subjects=_split(subjects), max_subjects=max_subjects, data_root=data_root),
               lambda task: f"Question answering ({kind})", out=out, run_dir=run_dir, model=model, options=recipe_options, seed=seed,
               pool=pool, index_dir=index_dir, caption_tokens=caption_tokens, summary_tokens=summary_tokens, quiet=quiet, threads=threads,
               reuse=reuse)


@eval_app.command("caption", cls=_BenchmarkCommand)
@recipe_options
def caption(
    dataset: str = typer.Option("myvlm", "--dataset", "-d", help="bo | myvlm | a folder DIR/<subject>/*.jpg"),
    methods: str = MethodsOpt,
    out: Path = typer.Option(..., "--out", "-o"),
    model: str = ModelOpt,
    run_dir: Path = RunDirOpt,
    data_root: Path = DataRootOpt,
    subjects: str = typer.Option(None, "--subjects"),
    max_subjects: int = typer.Option(None, "--max-subjects"),
    max_photos: int = typer.Option(None, "--max-photos", help="At most N test photos per subject."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", help="Caption length."),
    train_per_subject: int = typer.Option(4, "--train-per-subject"),
    seed: int = typer.Option(0, "--seed"),
    recipe_options: RecipeOptions = RECIPE_OPTIONS,
    pool: list[Path] = PoolOpt, index_dir: Path = IndexDirOpt,
    caption_tokens: int = CaptionTokOpt, summary_tokens: int = SummaryTokOpt,
    quiet: bool = typer.Option(False, "--quiet"),
    threads: int = ThreadsOpt,
    reuse: list[Path] = ReuseOpt,
):
    """MyVLM caption recall: share of "Describe this photo." captions of the subject's test photos that name it."""
    from ..eval.caption import CaptionTask
    from ..eval.datasets import load_dataset

    def make_task():
        return CaptionTask(load_dataset(dataset, data_root, train_per_subject, seed), subjects=_split(subjects), max_subjects=max_subjects,
                           max_photos=max_photos, max_new_tokens=max_new_tokens, seed=seed)

    _benchmark("caption", methods, make_task, lambda task: f"Caption recall: {task.dataset.name}", out=out, run_dir=run_dir, model=model,
               options=recipe_options, seed=seed, pool=pool, index_dir=index_dir, caption_tokens=caption_tokens,
               summary_tokens=summary_tokens, quiet=quiet, threads=threads, reuse=reuse)


@eval_app.command("generation", cls=_BenchmarkCommand)
@recipe_options
def generation(
    dataset: str = typer.Option("myvlm", "--dataset", "-d", help="bo | myvlm | a folder DIR/<subject>/*.jpg"),
    methods: str = MethodsOpt,
    out: Path = typer.Option(..., "--out", "-o"),
    model: str = typer.Option(..., "--model", "-m", help="A model that draws (Janus / Janus-Pro): local folder or HF-cache id."),
    run_dir: Path = RunDirOpt,
    data_root: Path = DataRootOpt,
    subjects: str = typer.Option(None, "--subjects"),
    max_subjects: int = typer.Option(None, "--max-subjects"),
    n_images: int = typer.Option(4, "--n-images", min=1, help="Pictures drawn per subject and method."),
    guidance: float = typer.Option(None, "--guidance", help="Classifier-free guidance (default: the model's own)."),
    max_negatives: int = typer.Option(40, "--max-negatives", help="Other subjects' photos in the recognition check."),
    train_per_subject: int = typer.Option(4, "--train-per-subject"),
    seed: int = typer.Option(0, "--seed"),
    embedder: str = typer.Option(None, "--embedder", help="Compare pictures with a local CLIP, SigLIP or DINO checkpoint (folder or "
                                 "HF-cache id) instead of the product's EfficientNet-Lite0: the papers' CLIP-I / DINO scores."),
    recipe_options: RecipeOptions = RECIPE_OPTIONS,
    pool: list[Path] = PoolOpt, index_dir: Path = IndexDirOpt,
    caption_tokens: int = CaptionTokOpt, summary_tokens: int = SummaryTokOpt,
    quiet: bool = typer.Option(False, "--quiet"),
    threads: int = ThreadsOpt,
    reuse: list[Path] = ReuseOpt,
):
    """Yo'Chameleon: pictures of each subject drawn by each method, their similarity to its held-out photos vs the other
    subjects' (the product's image embedder), and recognition with the same concept. Needs a model that draws."""
    from ..eval.datasets import load_dataset
    from ..eval.generation import GenerationTask

    image_embedder = None
    if embedder:
        from ..vision.hf_embedder import HFImageEmbedder

        try:
            image_embedder = HFImageEmbedder(embedder)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--embedder") from None

    def make_task():
        return GenerationTask(load_dataset(dataset, data_root, train_per_subject, seed), subjects=_split(subjects),
                              max_subjects=max_subjects, n_images=n_images, guidance=guidance, max_negatives=max_negatives, seed=seed,
                              embedder=image_embedder)

    _benchmark("generation", methods, make_task, lambda task: f"Generation: {task.dataset.name}", out=out, run_dir=run_dir, model=model,
               options=recipe_options, seed=seed, pool=pool, index_dir=index_dir, caption_tokens=caption_tokens,
               summary_tokens=summary_tokens, quiet=quiet, threads=threads, reuse=reuse)


@eval_app.command("forgetting")
def forgetting(
    concepts: list[str] = typer.Option(None, "--concept", "-c", help="Concept names (in the concepts folder) or .json paths to load."),
    n_random: int = typer.Option(None, "--random", help="Randomly initialised concepts to load as well (default: 3 if no --concept)."),
    photo: list[Path] = typer.Option(None, "--photo", help="Photos for the visual questions (default: two shared photos)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the result as JSON (and .md beside it)."),
    model: str = ModelOpt,
    concepts_dir: Path = typer.Option(None, "--concepts-dir"),
    data_root: Path = DataRootOpt,
    max_new_tokens: int = typer.Option(32, "--max-new-tokens"),
    threads: int = ThreadsOpt,
):
    """Answers to general questions, with and without a photo, are identical with concepts loaded vs none."""
    from ..engine import Engine
    from ..paths import default_data_root
    from ..eval.forgetting import ForgettingTask, forgetting_markdown

    _threads(threads)
    try:
        engine = Engine.from_pretrained(model, concepts_dir)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    engine.adapter.use_exact_generation()
    if not photo:
        root = Path(data_root or default_data_root())
        photo = [p for p in (root / "yollava" / "bo" / "test" / "0.jpg", root / "pool" / "imagenet") if p.exists()]
        photo = [p if p.is_file() else sorted(p.glob("*.jpg"))[0] for p in photo]
    n_random = (0 if concepts else 3) if n_random is None else n_random
    try:
        result = ForgettingTask(concepts or [], n_random, photo, max_new_tokens=max_new_tokens).run(engine)
    except YollavaError as e:
        _fail(str(e))
    typer.echo(f"{result['identical']}/{result['cases']} answers identical with {len(result['concepts_loaded'])} concepts loaded; "
               f"max first-token logit difference {result['max_logit_diff']:.3g}: {'PASSED' if result['passed'] else 'FAILED'}")
    if out:
        from ..data.pool import atomic_write_json

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, result)
        out.with_suffix(".md").write_text(forgetting_markdown(result, _command_line()), encoding="utf-8")
        typer.echo(f"wrote {out}, {out.with_suffix('.md')}")
    if not result["passed"]:
        raise typer.Exit(2)


@eval_app.command("report")
def report(results_json: Path = typer.Argument(..., help="A results.json written by an eval command.")):
    """Re-draw results.md and results.png from a results.json."""
    from ..eval.report import write_report

    results = json.loads(results_json.read_text(encoding="utf-8"))
    paths = write_report(results, results_json, results.get("title"))
    typer.echo("wrote " + ", ".join(map(str, paths)))


@eval_app.command("compare")
def compare(
    first: Path = typer.Argument(..., help="A recognition results.json (e.g. the old recipe's), or a run folder still in progress."),
    second: Path = typer.Argument(..., help="Another recognition results.json or run folder over the same subjects (e.g. the new recipe's)."),
    out: Path = typer.Option(..., "--out", help="Markdown file to write; a .png scatter plot is written beside it."),
    labels: str = typer.Option("first,second", "--labels", help="Two names for the runs, comma-separated."),
    methods: str = typer.Option(None, "--methods", help="Methods to compare (default: every method both runs have)."),
):
    """Two recognition runs subject by subject: weighted accuracy and AUC in each, their differences, a scatter plot."""
    from ..eval.compare import compare_markdown, compare_plot, compare_runs, load_run

    names = [s.strip() for s in labels.split(",")]
    if len(names) != 2 or not all(names):
        _fail(f"--labels needs two names separated by a comma, not {labels!r}")
    try:
        runs = [load_run(p) for p in (first, second)]
        comparison = compare_runs(*runs, methods=_split(methods))
    except (OSError, ValueError) as e:  # JSONDecodeError is a ValueError
        _fail(str(e))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(compare_markdown(comparison, *names, sources=(str(first), str(second))), encoding="utf-8")
    png = compare_plot(comparison, *names, out.with_suffix(".png"))
    typer.echo(f"wrote {out}, {png}")
