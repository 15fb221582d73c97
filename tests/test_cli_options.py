"""One recipe option group for every command that trains: the same flags with the same help, the same
Recipe from the same flags, and the same refusal of a bad value."""

from __future__ import annotations

import dataclasses

import pytest
import typer
from typer.testing import CliRunner

from yollava.cli import app
from yollava.cli.options import recipe_flags, recipe_option_parameters
from yollava.recipes import Recipe, RecipeOptions, get_recipe

runner = CliRunner()

# every command that trains (or builds training data), with the arguments it needs besides the recipe flags
TRAINING_COMMANDS = {
    "personalize": ["personalize", "bo", "photos/"],
    "personalize-many": ["personalize-many", "subjects/"],
    "demo": ["demo"],
    "serve": ["serve"],
    "eval recognition": ["eval", "recognition", "--out", "r.json"],
    "eval qa": ["eval", "qa", "--out", "q.json"],
    "eval caption": ["eval", "caption", "--out", "c.json"],
    "eval generation": ["eval", "generation", "--out", "g.json", "--model", "janus-path"],
    "data build": ["data", "build", "bo", "photos/"],
}

FLAGS = ["--recipe", "fast", "--epochs", "2", "--k", "3", "--lr", "0.02", "--batch-size", "4", "--patience", "1", "--n-easy", "5",
         "--n-hard", "6", "--conversation-tokens", "7", "--no-hard-negatives", "--no-conversations", "--no-short-answers",
         "--gradient-checkpointing", "--balance-by", "weight", "--precision", "model"]


def _command(path: str):
    cmd = typer.main.get_command(app)
    for part in path.split():
        cmd = cmd.commands[part]
    return cmd


def _all_commands(group, prefix: str = ""):
    for name, cmd in getattr(group, "commands", {}).items():
        path = f"{prefix}{name}"
        yield path, cmd
        yield from _all_commands(cmd, path + " ")


def _options(cmd) -> dict[str, tuple]:
    """flag -> (the option's flags, its help, its default) for every option of a click command."""
    return {flag: (tuple(p.opts), p.help, p.default) for p in cmd.params for flag in p.opts if flag.startswith("-")}


def test_every_training_command_takes_the_same_recipe_flags():
    group = recipe_flags()
    assert {"--recipe", "-r", "--epochs", "--k", "--lr", "--batch-size", "--patience", "--n-easy", "--n-hard", "--conversation-tokens",
            "--no-hard-negatives", "--no-conversations", "--no-short-answers", "--no-sentence-answers", "--gradient-checkpointing",
            "--balance-by", "--precision", "--no-visual-init", "--no-captions", "--reading", "--scene-negatives"} == set(group)
    assert len(recipe_option_parameters()) == len(dataclasses.fields(RecipeOptions))  # one flag per field, nothing else
    reference = {f: o for f, o in _options(_command("personalize")).items() if f in group}
    assert set(reference) == set(group)
    # any command that takes --recipe (a new one too) must take the whole group
    takes_recipe = [path for path, cmd in _all_commands(typer.main.get_command(app)) if "--recipe" in _options(cmd)]
    assert sorted(takes_recipe) == sorted(TRAINING_COMMANDS)
    for path in TRAINING_COMMANDS:
        options = _options(_command(path))
        missing = set(group) - set(options)
        assert not missing, f"{path} lacks {sorted(missing)}"
        assert {f: options[f] for f in group} == reference, f"{path}'s recipe flags differ from personalize's"


def test_the_same_flags_make_the_same_recipe_in_every_command(monkeypatch, tmp_path):
    made: dict[str, Recipe] = {}
    real = RecipeOptions.to_recipe

    class Made(Exception):
        pass

    def capture(self, **kw):
        made[current] = real(self, **kw)
        raise Made  # stop before any model or data is loaded

    monkeypatch.setattr(RecipeOptions, "to_recipe", capture)
    monkeypatch.chdir(tmp_path)
    for current, args in TRAINING_COMMANDS.items():
        r = runner.invoke(app, [*args, *FLAGS])
        assert isinstance(r.exception, Made), f"{current}: {r.output} {r.exception!r}"
    assert set(made) == set(TRAINING_COMMANDS)
    expected = get_recipe("fast").override(epochs=2, k=3, lr=0.02, batch_size=4, patience=1, n_easy_negatives=5, n_hard_negatives=6,
                                           conversation_tokens=7, hard_negatives=False, conversations=False, short_answers=False,
                                           gradient_checkpointing=True, balance_by="weight")
    expected = dataclasses.replace(expected, train=dataclasses.replace(expected.train, precision=None))  # --precision model
    assert expected.name == "fast-modified"
    for path, recipe in made.items():
        assert recipe == expected, path


@pytest.mark.parametrize("path", list(TRAINING_COMMANDS))
def test_every_training_command_refuses_a_bad_recipe_value_before_loading_anything(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, [*TRAINING_COMMANDS[path], "--k", "0"])
    assert r.exit_code == 1 and "k must be an integer >= 1" in r.output, (path, r.output)
    r = runner.invoke(app, [*TRAINING_COMMANDS[path], "--recipe", "quick"])
    assert r.exit_code == 1 and "unknown recipe 'quick'" in r.output, (path, r.output)


def test_the_decorator_refuses_a_command_that_would_shadow_a_recipe_flag():
    from yollava.cli.options import RECIPE_OPTIONS, recipe_options

    with pytest.raises(TypeError, match="epochs"):
        @recipe_options
        def cmd(epochs: int = typer.Option(1), recipe_options: RecipeOptions = RECIPE_OPTIONS):
            pass

    with pytest.raises(TypeError, match="no parameter"):
        @recipe_options
        def other(epochs: int = typer.Option(1)):
            pass
