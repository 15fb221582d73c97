"""Named training recipes: how a concept's training set is built and how it is trained.

- ``fast`` (default): recipe v2. Every recognition photo is also asked the product's own
  recognition query (or a short paraphrase) answered exactly "Yes"/"No", the decision ``recognize``
  reads; positives are repeated to balance the negatives (augmented views instead were worse on the
  dev subjects: ``benchmarks/results/recipe_dev/``); a fixed schedule (no epoch picked from 1-2
  held-back photos); the yes/no threshold is set on augmented views of the positives against unused
  pool photos, so every one of the user's photos trains. The paper's sentence
  answers stay on the positives and some negatives, and text-only conversations on 2 photos, so
  chat keeps natural answers and the concept's output row is trained. Since session 12 (pocket v2) the latents start
  from the photos' own visual tokens (``init="visual-global"``) and 4 photos get a caption sample naming the subject
  ("<bo> is a dog lying on a bed."), counted like the positives: on the dev subjects, 3 seeds, weighted accuracy
  0.868 -> 0.910 and AUC 0.938 -> 0.974 from the visual start, seed range a fifth to a quarter of before; caption
  recall 0.00 -> 0.73 from counting the captions like positives (seed 0) (``benchmarks/results/recipe_dev_v2/summary.md``). Training steps run a bf16 copy of
  the frozen model where the CPU multiplies bf16 natively (``precision="auto"``: about 3x faster there;
  on the dev subjects within seed noise of fp32, ``benchmarks/results/recipe_dev/bf16.md``).
- ``accurate``: ``fast`` for 3 epochs instead of 1 (chosen on the dev subjects of
  ``benchmarks/results/recipe_dev/threshold_rules.md``, never on a reported test set): concepts
  from 3-4 photos are under-trained after one epoch; three cost 3x the training time.
- ``myvlm``: MyVLM's method (``injection="vision"``): the concept head is the toggle; when it finds the subject in a
  photo, one learned concept embedding (k=1, started from the mean of the photos' visual tokens) follows the photo's
  visual tokens, where MyVLM puts its embedding (in the vision-language features; here the projected visual tokens
  the LLM reads, after the chat template's newline). Trained on the base model's captions of every photo rewritten to
  name the subject, the paper's positive sentence answers, and the base model's own captions of 12 pool photos (6
  look-alikes, 6 random; nothing injected, the subject not named: without them the concept's output row named the
  subject in every caption, head or not); recognition is the head's. Text-only prompts get nothing (MyVLM personalises what it sees). Epochs, learning rate and batch are ours.
- ``paper``: Yo'LLaVA as published (sentence templates only, 100 + 100 negatives, conversations about
  every photo, 15 epochs, AdamW 1e-3, best epoch on a held-back slice).

``Recipe.to_dict`` is what goes into the concept JSON (name + every setting). :class:`DataConfig` (how the
training set is built) and :class:`TrainConfig` (how it is trained) live here beside the recipe, without torch.
Both check their values when made (and when changed with ``dataclasses.replace`` or :meth:`Recipe.override`).

:class:`RecipeOptions` is what every training command takes on the command line (``--recipe`` and the
settings it may change); :func:`yollava.cli.options.recipe_options` turns its fields into one Typer
option group, so the flags cannot drift between commands.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


def _check_int(config: Any, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")


@dataclass
class TrainConfig:
    k: int = 16
    lr: float = 1e-3
    epochs: int = 15
    batch_size: int = 8
    weight_decay: float = 0.0
    seed: int = 0
    #: share of recognition photos (each class) held back to pick the best epoch and the threshold
    holdout_fraction: float = 0.2
    #: make positive recognition samples weigh as much as the negatives
    balance_positives: bool = True
    #: how: "repeat" (or None) each positive that many times in an epoch, or "weight" its loss (each positive
    #: ``positive_repeats`` (None: 1) times, its loss weighted for the rest: fewer samples and steps per epoch).
    #: Both added after run folders and concepts were first stored: None is the behaviour they had.
    balance_by: str | None = None
    positive_repeats: int | None = None
    #: stop after this many evaluations without a better held-back score (None: run all epochs)
    patience: int | None = None
    #: recognition is scored every this many epochs (and at the last)
    eval_every: int = 1
    #: run the frozen prompt prefix (system prompt + photo) once and reuse its keys/values
    prefix_cache: bool = True
    #: keep the epoch that scores best on the held-back / calibration samples (False: the last epoch)
    select_best_epoch: bool = True
    #: recompute the frozen decoder's activations in backward (less memory, more compute; no prefix cache)
    gradient_checkpointing: bool = False
    #: the frozen model's precision in training steps: None (its own), "bf16" (a bf16 copy: about 3x faster on
    #: CPUs with native bf16), "auto" (bf16 where the hardware has it and the family offers it, else its own).
    #: Concept rows, their gradients and AdamW stay fp32; scoring (held-back epochs, the threshold) uses the
    #: model itself. Added after run folders and concepts were first stored: None is the behaviour they had.
    precision: str | None = None
    #: where the latent rows start: None (near the mean word embedding, as ``resize_token_embeddings`` does) or
    #: "visual" / "visual-global" / "visual-first" (from the training photos' own visual tokens,
    #: :func:`yollava.concepts.concept.visual_latents`). Added after concepts were first stored: None is what they had.
    init: str | None = None
    #: caption samples count as much as the positives in the balance (repeated or weighted as they are); else once
    #: per epoch (a 1-epoch concept then keeps the base model's captions: recall 0.00 on the dev subjects)
    repeat_captions: bool = False
    #: where the latents enter a prompt (:attr:`yollava.concepts.Concept.injection`): None / "prompt" (Yo'LLaVA) or
    #: "vision" (MyVLM: after the photo, when the concept head fires; recipe ``myvlm``)
    injection: str | None = None
    #: how the concept's yes/no is read from a photo (:attr:`yollava.concepts.Concept.reading`): None / "whole" (the
    #: photo as given) or "views" (the best of its views; calibrated the same way, about 5-8x the forward passes)
    reading: str | None = None

    def __post_init__(self):
        for name, minimum in (("k", 1), ("epochs", 1), ("batch_size", 1), ("eval_every", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")
        if self.patience is not None and (isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"patience must be None or an integer >= 1, not {self.patience!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < float("inf")):
            raise ValueError(f"lr must be a positive number, not {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < float("inf")):
            raise ValueError(f"weight_decay must be a number >= 0, not {self.weight_decay!r}")
        if self.balance_by not in (None, "repeat", "weight"):
            raise ValueError(f"balance_by must be 'repeat' or 'weight', not {self.balance_by!r}")
        if self.positive_repeats is not None and (isinstance(self.positive_repeats, bool) or not isinstance(self.positive_repeats, int)
                                                  or self.positive_repeats < 1):
            raise ValueError(f"positive_repeats must be None or an integer >= 1, not {self.positive_repeats!r}")
        if not (isinstance(self.holdout_fraction, (int, float)) and 0 <= self.holdout_fraction < 1):
            raise ValueError(f"holdout_fraction must be in [0, 1), not {self.holdout_fraction!r}")
        if self.precision not in (None, "bf16", "auto"):
            raise ValueError(f"precision must be None (the model's own), 'bf16' or 'auto', not {self.precision!r}")
        if self.init not in (None, "visual", "visual-global", "visual-first"):
            raise ValueError(f"init must be None (the mean embedding), 'visual', 'visual-global' or 'visual-first', not {self.init!r}")
        if self.injection not in (None, "prompt", "vision"):
            raise ValueError(f"injection must be None / 'prompt' (before the question) or 'vision' (after the photo), not {self.injection!r}")
        if self.reading not in (None, "whole", "views"):
            raise ValueError(f"reading must be None / 'whole' (the photo as given) or 'views' (the best of its views), not {self.reading!r}")
        if self.precision == "bf16" and self.gradient_checkpointing:
            raise ValueError("precision 'bf16' trains a copy of the model, which gradient checkpointing does not reach; "
                             "use precision None or 'auto' with gradient_checkpointing")

    @property
    def visual_init(self) -> str | None:
        """How :func:`yollava.concepts.concept.visual_latents` starts the latents, or None (the mean embedding)."""
        return None if self.init is None else (self.init.removeprefix("visual").lstrip("-") or "pooled")

    def training_precision(self, adapter) -> str | None:
        """The precision these settings train in on ``adapter`` ("auto" resolved; gradient checkpointing runs the model itself)."""
        if self.gradient_checkpointing or self.precision is None:
            return None
        return adapter.fast_training_precision() if self.precision == "auto" else self.precision


@dataclass
class DataConfig:
    """How a concept's training set is built (defaults: the paper's; see ``yollava.recipes``)."""

    category: str = "object"  # "person" or "object" (pets count as objects, as in the paper)
    n_easy_negatives: int = 100
    n_hard_negatives: int = 100
    hard_negatives: bool = True
    conversations: bool = True
    #: photos the base model is asked the attribute questions about (None: all; the official <bo> data used 4)
    conversation_photos: int | None = None
    conversation_tokens: int = 48
    #: the paper's sentence answers (Tables 16-17) on every positive and on this many negatives (None: all)
    sentence_answers: bool = True
    sentence_negatives: int | None = None
    #: a "Yes"/"No" answer to the product's recognition query (or a paraphrase) for every recognition photo
    short_answers: bool = False
    #: augmented views of each positive for its short answers (None: enough to match the negatives' count)
    positive_views: int | None = 0
    #: set aside to set the yes/no threshold (never trained on): unused pool photos, unseen views per positive
    calibration_negatives: int = 0
    calibration_views: int = 0
    #: photos the base model captions ("Describe this photo."), its caption naming the subject by the identifier
    #: (:func:`yollava.data.templates.name_in_caption`) trained as the answer with the photo
    caption_photos: int = 0
    #: negatives captioned as they are, not naming the subject (``other_caption`` samples; recipe ``myvlm``)
    caption_negatives: int = 0
    #: crops of each photo where the subject is not, answered "No" (:mod:`yollava.data.scene`: the user's own scenes)
    scene_negatives: int = 0

    def __post_init__(self):
        if self.category not in ("person", "object"):
            raise ValueError(f"category must be 'person' or 'object', not {self.category!r}")
        for field_name in ("n_easy_negatives", "n_hard_negatives", "conversation_tokens", "calibration_negatives", "calibration_views",
                           "caption_photos", "caption_negatives", "scene_negatives"):
            _check_int(self, field_name, 0)
        for field_name in ("conversation_photos", "sentence_negatives", "positive_views"):  # None: all / as many as needed
            if getattr(self, field_name) is not None:
                _check_int(self, field_name, 0)
        if not (self.sentence_answers or self.short_answers):
            raise ValueError("a recipe needs sentence_answers or short_answers (or both): there would be no recognition sample")

    def builder_options(self) -> dict:
        """This config as keyword arguments of :func:`yollava.data.builder.build_training_set` (the one
        place that maps the two; ``conversation_tokens`` belongs to the answering model, not the builder)."""
        return {
            "category": self.category, "n_easy_negatives": self.n_easy_negatives, "n_hard_negatives": self.n_hard_negatives,
            "hard_negatives": self.hard_negatives, "conversations": self.conversations, "conversation_photos": self.conversation_photos,
            "sentence_answers": self.sentence_answers, "sentence_negatives": self.sentence_negatives, "short_answers": self.short_answers,
            "positive_views": self.positive_views, "calibration_negatives": self.calibration_negatives,
            "calibration_views": self.calibration_views, "caption_photos": self.caption_photos,
            "caption_negatives": self.caption_negatives, "scene_negatives": self.scene_negatives,
        }

    @property
    def asks_base_model(self) -> bool:
        """Whether building the training set asks the base model (conversations, captions)."""
        return self.conversations or self.caption_photos > 0 or self.caption_negatives > 0

    @property
    def needs_pool(self) -> bool:
        return self.n_easy_negatives > 0 or (self.hard_negatives and self.n_hard_negatives > 0) or self.calibration_negatives > 0


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    #: what it costs on `pocket` (measured; see README "Evaluation")
    cost: str
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "train": asdict(self.train), "data": asdict(self.data)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        """Rebuild a stored recipe; settings this version does not know are ignored. A training setting missing
        from a stored ``train`` dict whose default is None / False was added since the recipe was stored: it
        takes that default, the behaviour the recipe had then (e.g. ``precision``: the model's own, even where
        the named recipe now says "auto"). With no ``train`` dict at all, the named recipe's settings."""
        base = RECIPES.get(str(d.get("name", "")).removesuffix("-modified"), RECIPES["paper"])
        known_t = {f.name for f in fields(TrainConfig)}
        known_d = {f.name for f in fields(DataConfig)}
        stored_train = d.get("train", {})
        added_later = {f.name: f.default for f in fields(TrainConfig)
                       if stored_train and f.name not in stored_train and (f.default is None or f.default is False)}
        train = replace(base.train, **added_later, **{k: v for k, v in stored_train.items() if k in known_t})
        data = replace(base.data, **{k: v for k, v in d.get("data", {}).items() if k in known_d})
        return replace(base, name=d.get("name", base.name), train=train, data=data)

    def override(self, **settings: Any) -> Recipe:
        """The same recipe with some settings changed (``None`` values are ignored); each name must be a
        field of ``TrainConfig`` or ``DataConfig``."""
        settings = {k: v for k, v in settings.items() if v is not None}
        known_t = {f.name for f in fields(TrainConfig)}
        known_d = {f.name for f in fields(DataConfig)}
        unknown = set(settings) - known_t - known_d
        if unknown:
            raise ValueError(f"unknown recipe setting(s): {', '.join(sorted(unknown))}")
        return _named(replace(self, train=replace(self.train, **{k: v for k, v in settings.items() if k in known_t}),
                              data=replace(self.data, **{k: v for k, v in settings.items() if k in known_d})))


_FAST = Recipe(
    "fast",
    "recipe v2: latents start from your photos' own visual tokens; short Yes/No answers on every recognition photo, captions naming the subject on 4 photos, one epoch, threshold set on unused pool photos and augmented views of yours",
    "about 3 min per concept on 2 idle CPU cores with pocket v2 where the CPU multiplies bf16 natively (181 s for <bo>, 10 photos, session 14; pocket v1: 71 s)",
    TrainConfig(epochs=1, lr=1e-3, batch_size=8, holdout_fraction=0.0, select_best_epoch=False, precision="auto", init="visual-global",
                repeat_captions=True),
    DataConfig(n_easy_negatives=60, n_hard_negatives=40, short_answers=True, sentence_negatives=20, positive_views=0,
               calibration_negatives=40, calibration_views=2, conversation_photos=2, conversation_tokens=32, caption_photos=4),
)

RECIPES: dict[str, Recipe] = {
    "fast": _FAST,
    "accurate": replace(  # fast for 3 epochs, nothing else
        _FAST,
        name="accurate",
        summary="the fast recipe trained for 3 epochs: on the dev subjects weighted accuracy 0.863 -> 0.944 and AUC 0.919 -> 0.981 at the concept's own threshold",
        cost="3x fast's training steps: 12-13 min per 4-photo concept on one CPU thread with pocket in fp32; a bf16 step is about 3x faster (train_speed.md), accurate not timed whole with it",
        train=replace(_FAST.train, epochs=3),
        data=replace(_FAST.data),  # its own copy: registry entries share no mutable config
    ),
    "myvlm": Recipe(  # MyVLM's method on this model; the settings are ours (the paper's text here has none)
        "myvlm",
        "MyVLM's method: the concept head decides whether your subject is in a photo, and only then a learned concept embedding follows the photo's visual tokens, trained on captions that name the subject; recognition is the head's",
        "not timed yet",
        TrainConfig(k=1, epochs=10, lr=1e-3, batch_size=8, holdout_fraction=0.0, select_best_epoch=False, precision="auto", init="visual",
                    repeat_captions=True, injection="vision"),
        DataConfig(n_easy_negatives=6, n_hard_negatives=6, conversations=False, sentence_answers=True, sentence_negatives=0,
                   short_answers=False, caption_photos=10, caption_negatives=12),
    ),
    "paper": Recipe(
        "paper",
        "Yo'LLaVA as published: sentence answers, 100 + 100 negatives, conversations on every photo, 15 epochs",
        "about 5 h per concept on 2 CPU cores with pocket",
        TrainConfig(epochs=15, lr=1e-3, batch_size=8),
        DataConfig(),
    ),
}
DEFAULT_RECIPE = "fast"


def get_recipe(name: str = DEFAULT_RECIPE) -> Recipe:
    """A copy of the named recipe (its configs can be changed without touching the registry)."""
    try:
        return copy.deepcopy(RECIPES[name])
    except KeyError:
        if name in UNIFIED_RECIPES:  # defined below: a concept that also draws, trained by `personalize` only
            raise ValueError(f"recipe {name!r} makes a concept that also draws its subject: train it with `yollava personalize "
                             f"NAME PHOTOS --recipe {name}` (Python: YoLLaVA.personalize(..., recipe={name!r})) on a model that draws "
                             f"(Janus); this command takes {', '.join(RECIPES)}") from None
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}") from None


def recipes_help() -> str:
    return ("; ".join(f"'{r.name}': {r.summary} ({r.cost})" for r in RECIPES.values())
            + "; on a model that draws (Janus): 'yochameleon' (a concept that also draws its subject) and its ablations "
            "'yochameleon-no-soft-positives', 'yochameleon-no-self-prompting', 'yochameleon-shared-tokens' (personalize only)")


def _named(recipe: Recipe) -> Recipe:
    """``recipe`` named after the registered recipe it came from: ``"fast"`` when its settings are fast's
    (the subject's category and the training precision, a runtime choice recorded beside it, aside), else
    ``"fast-modified"``."""
    base_name = recipe.name.removesuffix("-modified")
    registered = RECIPES.get(base_name)
    if registered is None:
        return recipe
    same = (replace(recipe.train, precision=registered.train.precision) == registered.train
            and replace(recipe.data, category=registered.data.category) == registered.data)
    return replace(recipe, name=base_name if same else f"{base_name}-modified")


def resolve_recipe(recipe: Recipe | str | None = None, train: TrainConfig | None = None, data: DataConfig | None = None) -> Recipe:
    """The recipe a run uses: ``recipe`` (a Recipe, a name, or None for the default) with ``train`` /
    ``data`` replacing its settings; renamed ``"<name>-modified"`` when they differ from it."""
    base = recipe if isinstance(recipe, Recipe) else get_recipe((recipe or DEFAULT_RECIPE).removesuffix("-modified"))
    return _named(replace(base, train=train or base.train, data=data or base.data))


def recipe_from_options(
    recipe: str = DEFAULT_RECIPE, *, category: str | None = None, epochs: int | None = None, k: int | None = None,
    lr: float | None = None, batch_size: int | None = None, patience: int | None = None, seed: int | None = None,
    n_easy: int | None = None, n_hard: int | None = None, conversation_tokens: int | None = None,
    no_hard_negatives: bool = False, no_conversations: bool = False, no_short_answers: bool = False,
    no_sentence_answers: bool = False, gradient_checkpointing: bool = False, balance_by: str | None = None,
    precision: str | None = None, no_visual_init: bool = False, no_captions: bool = False, reading: str | None = None,
    scene_negatives: int | None = None,
) -> Recipe:
    """A named recipe with the command-line overrides every command shares (None / False: unchanged;
    ``precision="model"``: the frozen model's own precision, TrainConfig's None; ``no_visual_init``: latents from the
    mean embedding, ``no_captions``: no caption samples — together, ``fast`` as it was before session 12; ``reading``:
    how the concept's yes/no is read from a photo, see :attr:`TrainConfig.reading`)."""
    if precision not in (None, "model", "bf16", "auto"):
        raise ValueError(f"precision must be 'model', 'bf16' or 'auto', not {precision!r}")
    base = get_recipe(recipe)
    changed = base.override(
        category=category, epochs=epochs, k=k, lr=lr, batch_size=batch_size, patience=patience, seed=seed,
        n_easy_negatives=n_easy, n_hard_negatives=n_hard, conversation_tokens=conversation_tokens,
        hard_negatives=False if no_hard_negatives else None, conversations=False if no_conversations else None,
        short_answers=False if no_short_answers else None, sentence_answers=False if no_sentence_answers else None,
        gradient_checkpointing=True if gradient_checkpointing else None, balance_by=balance_by,
        precision=None if precision == "model" else precision, caption_photos=0 if no_captions else None,
        scene_negatives=scene_negatives,
    )
    train = replace(changed.train, precision=None) if precision == "model" else changed.train
    train = replace(train, init=None) if no_visual_init else train
    train = replace(train, repeat_captions=False) if no_captions else train
    train = replace(train, reading=reading) if reading is not None else train
    return resolve_recipe(base, train, changed.data)


def _opt(help: str, **extra: Any) -> Any:
    return {"help": help, **extra}


@dataclass(frozen=True)
class RecipeOptions:
    """The recipe settings every training command takes (``--recipe`` and single settings of it).

    Each field is one command-line flag (``--`` + the name with dashes; ``metadata`` carries its help);
    ``None`` / ``False`` leave the named recipe's setting as it is. :meth:`to_recipe` is the one place
    that turns them into a :class:`Recipe`. The subject's ``category`` and the ``seed`` are not here:
    some commands take them per subject or share the seed with other things (the eval split)."""

    recipe: str = field(default=DEFAULT_RECIPE, metadata=_opt(
        "Training recipe: {recipes}. The options below change single settings of it.", short="-r"))
    epochs: int | None = field(default=None, metadata=_opt(
        "Epochs (default: the recipe's; 'paper' keeps the best held-back epoch, 'fast' the last)."))
    k: int | None = field(default=None, metadata=_opt("Latent tokens per concept (default 16)."))
    lr: float | None = field(default=None, metadata=_opt("AdamW learning rate (default 1e-3)."))
    batch_size: int | None = field(default=None, metadata=_opt("Batch size (default 8)."))
    patience: int | None = field(default=None, metadata=_opt("Stop after this many epochs without a better held-back score."))
    n_easy: int | None = field(default=None, metadata=_opt("Random pool photos as easy negatives (fast 60, paper 100)."))
    n_hard: int | None = field(default=None, metadata=_opt(
        "Retrieved hard negatives in total, ceil(n_hard/photos) per photo (fast 40, paper 100)."))
    conversation_tokens: int | None = field(default=None, metadata=_opt(
        "Max tokens of each synthesised conversation answer (fast 32, paper 48)."))
    no_hard_negatives: bool = field(default=False, metadata=_opt("Ablation: no retrieved hard negatives."))
    no_conversations: bool = field(default=False, metadata=_opt("Ablation: no text-only conversations."))
    no_short_answers: bool = field(default=False, metadata=_opt(
        "Ablation: no one-word Yes/No recognition answers (the paper's data)."))
    no_sentence_answers: bool = field(default=False, metadata=_opt("Ablation: no sentence recognition answers (Tables 16-17)."))
    no_visual_init: bool = field(default=False, metadata=_opt(
        "Ablation: latent tokens start near the mean word embedding, not from your photos' visual tokens (fast before session 12)."))
    no_captions: bool = field(default=False, metadata=_opt(
        "Ablation: no caption samples naming the subject (fast before session 12)."))
    reading: str | None = field(default=None, metadata=_opt(
        "How the concept's yes/no is read from a photo: 'whole' (the photo as given) or 'views' (the best of the whole photo and "
        "its corner crops, as the concept head reads it; about 5-8x the recognition passes)."))
    scene_negatives: int | None = field(default=None, metadata=_opt(
        "Crops of each of your photos where the subject is not, trained as 'No' (found by what your photos share; "
        "needs 2 photos or more; default 0)."))
    balance_by: str | None = field(default=None, metadata=_opt(
        "How positives are made to weigh as much as the negatives: 'repeat' them, or 'weight' their loss (each once: fewer steps)."))
    gradient_checkpointing: bool = field(default=False, metadata=_opt(
        "Recompute the frozen decoder's activations in backward: less (GPU) memory, about a third more compute, no prefix cache."))
    precision: str | None = field(default=None, metadata=_opt(
        "The frozen model's precision in training steps: 'model' (its own, fp32 on a CPU), 'bf16' (a bf16 copy: about 3x "
        "faster on CPUs with AVX-512 BF16 or AMX) or 'auto' (bf16 where the hardware has it). Scoring stays in the model's own."))

    def to_recipe(self, *, category: str | None = None, seed: int | None = None) -> Recipe:
        """The named recipe with these settings changed (and the subject's ``category`` / ``seed`` when given);
        a ``ValueError`` names a bad value."""
        settings = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "recipe"}
        return recipe_from_options(self.recipe, category=category, seed=seed, **settings)


# ---- Yo'Chameleon: concepts that also draw (models that write images: Janus) ------------------------------------------
@dataclass(frozen=True)
class YoChameleonConfig:
    """How a Yo'Chameleon concept is trained. The defaults are the paper's token budget (16 generation + 16
    understanding tokens, 32 in all) with Yo'LLaVA's optimiser (AdamW, lr 1e-3, 15 epochs)."""

    generation_tokens: int = 16
    understanding_tokens: int = 16
    #: ablation: one token set, of ``generation_tokens`` tokens, for both tasks
    shared_tokens: bool = False
    #: ablation off: answers start directly, without first emitting their token set
    self_prompting: bool = True
    #: look-alike pool photos to reconstruct with fewer generation tokens (0: the ablation without soft positives)
    soft_positives: int = 30
    epochs: int = 15
    lr: float = 1e-3
    batch_size: int = 4
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self):
        for name, minimum in (("generation_tokens", 1), ("understanding_tokens", 1), ("soft_positives", 0), ("epochs", 1),
                              ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{name} must be a whole number >= {minimum}, not {value!r}")
        if not (self.lr > 0):
            raise ValueError(f"lr must be > 0, not {self.lr!r}")
        if self.shared_tokens and self.generation_tokens != self.understanding_tokens:
            raise ValueError("shared_tokens: one set for both tasks, so generation_tokens must equal understanding_tokens")

    @property
    def k(self) -> int:
        """Latent tokens of the concept."""
        return self.generation_tokens if self.shared_tokens else self.generation_tokens + self.understanding_tokens


@dataclass(frozen=True)
class UnifiedRecipe:
    name: str
    summary: str
    train: YoChameleonConfig = field(default_factory=YoChameleonConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unified": asdict(self.train)}


_PAPER = YoChameleonConfig()
#: ``yochameleon`` and the ablations the paper reports
UNIFIED_RECIPES: dict[str, UnifiedRecipe] = {
    "yochameleon": UnifiedRecipe("yochameleon", "Yo'Chameleon: 16 generation + 16 understanding tokens, soft positives, self-prompting", _PAPER),
    "yochameleon-no-soft-positives": UnifiedRecipe("yochameleon-no-soft-positives", "ablation: no soft-positive images",
                                                   replace(_PAPER, soft_positives=0)),
    "yochameleon-no-self-prompting": UnifiedRecipe("yochameleon-no-self-prompting", "ablation: answers without first emitting a token set",
                                                   replace(_PAPER, self_prompting=False)),
    "yochameleon-shared-tokens": UnifiedRecipe("yochameleon-shared-tokens", "ablation: one shared set of 16 tokens for both tasks",
                                               replace(_PAPER, shared_tokens=True)),
}


def get_unified_recipe(name: str = "yochameleon") -> UnifiedRecipe:
    try:
        return UNIFIED_RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown Yo'Chameleon recipe {name!r}; choose from {', '.join(UNIFIED_RECIPES)}") from None
