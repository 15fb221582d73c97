"""The benchmark's two registries, like the model registry (:func:`yollava.models.register`).

- **Tasks** (``recognition``, ``qa``, ``caption``, ``forgetting``, ``generation``): a :class:`yollava.eval.driver.Task`
  subclass decorated with ``@register_task("name")``.
- **Methods** (the method and its baselines): a :class:`yollava.eval.methods.Method` subclass decorated
  with ``@register_method("name")``; the same class may be registered again under another name with
  constructor options (``@register_method("vanilla-sks", placeholder="sks")``). ``tasks=`` says which
  tasks accept it on the command line (default: the class's ``tasks``); ``default_for=`` the tasks whose
  ``--methods`` default includes it. ``yollava eval <task> --help`` lists the methods and the default from
  here (:func:`method_names`, :func:`default_methods`), in registration order. Adding a baseline is one class::

      @register_method("always-yes", tasks=("recognition",))
      class AlwaysYes(Method):
          def recognition_scores(self, ctx, subject, images):
              return [1.0] * len(images)

  after which ``--methods always-yes`` runs it through the same driver, run folder and report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_TASKS: dict[str, type] = {}
_METHODS: dict[str, MethodSpec] = {}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    cls: type
    options: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] = ()
    #: the tasks whose ``--methods`` default includes it
    default_for: tuple[str, ...] = ()

    def make(self):
        method = self.cls(**self.options)
        method.name = self.name  # (the records, run folders and report know it by this name)
        return method


def register_task(name: str):
    def deco(cls):
        cls.name = name
        _TASKS[name] = cls
        return cls

    return deco


def register_method(name: str, *, tasks: tuple[str, ...] | None = None, default_for: tuple[str, ...] = (), **options: Any):
    """Register a Method class under ``name``; ``options`` go to its constructor. ``default_for``: the tasks
    that run it when ``--methods`` is not given."""

    def deco(cls):
        offered = tuple(tasks if tasks is not None else cls.tasks)
        if not set(default_for) <= set(offered):
            raise ValueError(f"method {name!r} is a default for {sorted(set(default_for) - set(offered))} but not offered there")
        _METHODS[name] = MethodSpec(name, cls, dict(options), offered, tuple(default_for))
        return cls

    return deco


def unregister_method(name: str) -> None:
    _METHODS.pop(name, None)


_loading = False


def _import_builtins() -> None:
    """Register the built-in tasks and methods (once; a module may ask while it is itself being imported)."""
    global _loading
    if _loading:
        return
    _loading = True
    try:
        from . import methods, fused, probes, recognition, qa, caption, forgetting, generation  # noqa: F401, I001  (registration side effects, in listing order)
    except BaseException:
        _loading = False
        raise


def get_task(name: str) -> type:
    _import_builtins()
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(_TASKS)}") from None


def task_names() -> tuple[str, ...]:
    _import_builtins()
    return tuple(_TASKS)


def method_names(task: str | None = None) -> tuple[str, ...]:
    """Registered methods (in registration order), or those that ``task`` accepts."""
    _import_builtins()
    return tuple(n for n, spec in _METHODS.items() if task is None or task in spec.tasks)


def default_methods(task: str) -> tuple[str, ...]:
    """The methods ``task`` runs when none are named (registered with ``default_for=``), in registration order."""
    _import_builtins()
    return tuple(n for n, spec in _METHODS.items() if task in spec.default_for)


def make_method(name: str):
    _import_builtins()
    spec = _METHODS.get(name)
    if spec is None:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(method_names())}")
    return spec.make()


def parse_methods(spec: str | list[str], allowed: tuple[str, ...] | None = None) -> list[str]:
    """``"yollava,vanilla"`` -> ``["yollava", "vanilla"]`` (duplicates dropped), each one in ``allowed``
    (default: every registered method)."""
    allowed = method_names() if allowed is None else allowed
    names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    bad = [m for m in names if m not in allowed]
    if bad:
        raise ValueError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(allowed)}")
    if not names:
        raise ValueError("no method given")
    return list(dict.fromkeys(names))
