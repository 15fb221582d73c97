"""One Typer option group for the recipe settings, shared by every command that trains.

``personalize``, ``personalize-many``, ``demo``, ``serve``, ``eval recognition|qa|caption`` and ``data build``
declare one parameter ``recipe_options: RecipeOptions = RECIPE_OPTIONS`` and are decorated with
:func:`recipe_options`; the decorator replaces that parameter by one Typer option per field of
:class:`yollava.recipes.RecipeOptions` (same flag, same help everywhere) and hands the command a filled-in
``RecipeOptions``. The command builds its :class:`~yollava.recipes.Recipe` with
``recipe_options.to_recipe(category=..., seed=...)``. A flag added to ``RecipeOptions`` appears in every
command at once; ``tests/test_cli_options.py`` checks that they all accept the same flags.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from dataclasses import fields
from typing import Any

import typer

from ..recipes import RecipeOptions, recipes_help

#: the placeholder default of a command's ``recipe_options`` parameter (replaced by the option group)
RECIPE_OPTIONS: Any = None
PARAM = "recipe_options"


def _base_type(hint: Any) -> type:
    """``int | None`` -> ``int`` (Typer reads the default ``None`` as "not given")."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def recipe_option_parameters() -> list[inspect.Parameter]:
    """The option group as ``inspect.Parameter`` objects with Typer defaults, one per field of RecipeOptions."""
    hints = typing.get_type_hints(RecipeOptions)
    out = []
    for f in fields(RecipeOptions):
        flag = "--" + f.name.replace("_", "-")
        decls = [flag, *([f.metadata["short"]] if f.metadata.get("short") else [])]
        help_text = f.metadata["help"].format(recipes=recipes_help()) if "{recipes}" in f.metadata["help"] else f.metadata["help"]
        out.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=typer.Option(f.default, *decls, help=help_text),
                                     annotation=_base_type(hints[f.name])))
    return out


def recipe_flags() -> list[str]:
    """Every flag of the group (``--recipe``, ``-r``, ``--epochs``, ...)."""
    return [d for p in recipe_option_parameters() for d in p.default.param_decls]


def recipe_options(command):
    """Decorate a Typer command whose parameter ``recipe_options`` should be the recipe option group."""
    signature = inspect.signature(command, eval_str=True)
    if PARAM not in signature.parameters:
        raise TypeError(f"{command.__name__} has no parameter {PARAM!r} to put the recipe options in")
    group = recipe_option_parameters()
    names = [p.name for p in group]
    clash = set(names) & set(signature.parameters)
    if clash:
        raise TypeError(f"{command.__name__} has parameters that the recipe option group defines: {sorted(clash)}")
    params = []
    for p in signature.parameters.values():
        if p.name == PARAM:
            params += group
        else:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        options = RecipeOptions(**{n: kwargs.pop(n) for n in names if n in kwargs})
        return command(*args, **{PARAM: options}, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params if p.annotation is not inspect.Parameter.empty}
    return wrapper
