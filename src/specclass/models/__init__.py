"""Model registry: every network specclass can train, by name.

A model builder is a function ``builder(input_length, n_classes, **options) ->
keras.Model`` that returns a **compiled** model. Builders register themselves
with :func:`register_model`; :func:`get_model` looks them up by name.

Built-in builders live in modules that are imported lazily, the first time the
registry is consulted (so ``import specclass.models`` does not import Keras):

* :mod:`specclass.models.spectral` -- ``spectral_tutorial``, ``spectral_resnet``;
* :mod:`specclass.models.mnist` -- ``mnist_dense``, ``mnist_cnn`` (the Keras MNIST
  track), when that module is present.

Example::

    >>> from specclass.models import get_model, list_models
    >>> "spectral_resnet" in list_models()
    True
    >>> model = get_model("spectral_tutorial", input_length=4000, n_classes=4)
    >>> model.input_shape, model.output_shape
    ((None, 4000, 1), (None, 4))
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    import keras

#: Modules whose import registers built-in models, imported on first use.
#: A module that does not exist (not written yet, or removed) is skipped.
BUILTIN_MODULES: tuple[str, ...] = ("specclass.models.spectral", "specclass.models.mnist")

#: The model ``specclass train``, the demo and the pretrained classifiers use when none is
#: named: the tutorial's network trained the specclass way (pipeline-labelled simulated spectra,
#: augmentation, balanced weights), the best of the two in the 5-fold cross-validation on real
#: SDSS spectra (README "Benchmarks": seed4 balanced accuracy 0.829 vs 0.649 for spectral_resnet).
DEFAULT_MODEL = "spectral_tutorial"


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    Attributes:
        name: registry name (``spectral_resnet``, ...).
        builder: ``builder(input_length, n_classes, **options) -> keras.Model`` (compiled).
        summary: first line of the builder's docstring (shown by ``specclass models``).
        options: names and defaults of the builder's keyword options.
    """

    name: str
    builder: Callable[..., Any]
    summary: str
    options: dict[str, Any]


_REGISTRY: dict[str, ModelSpec] = {}
_BUILTINS_LOADED = False


class UnknownModelError(KeyError):
    """Raised by :func:`get_model` for a name that is not registered (lists the known names)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``builder`` under ``name``.

    Args:
        name: registry name; letters, digits and underscores.

    Returns:
        The decorator; it returns the builder unchanged.

    Raises:
        ValueError: if ``name`` is not an identifier, or is already registered by
            a different function.

    Example::

        @register_model("my_net")
        def my_net(input_length: int, n_classes: int, *, dropout: float = 0.3) -> keras.Model:
            ...
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"model name must be an identifier (letters, digits, _), got {name!r}")

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        old = _REGISTRY.get(name)
        if old is not None and _qualname(old.builder) != _qualname(builder):
            raise ValueError(f"model name {name!r} is already registered by {_qualname(old.builder)}")
        doc = inspect.getdoc(builder) or ""
        sig = inspect.signature(builder)
        options = {
            p.name: p.default
            for p in list(sig.parameters.values())[2:]
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }
        _REGISTRY[name] = ModelSpec(name, builder, doc.split("\n", 1)[0], options)
        return builder

    return decorator


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency inside the module
                raise


def describe_builtin_models() -> dict[str, tuple[str, dict[str, Any]]]:
    """``{name: (summary, options)}`` of the built-in models, **without importing Keras**.

    Reads the source of :data:`BUILTIN_MODULES` with :mod:`ast`: every function
    decorated ``@register_model("name")`` gives its docstring's first line and the
    defaults of its parameters after ``(input_length, n_classes)``, exactly what
    :func:`register_model` records when the module is imported (a test checks that
    both agree). ``specclass models`` uses it, so listing takes well under a
    second instead of the ~10 s of a TensorFlow import.

    Returns:
        Entries sorted by name; a default that is not a literal is given as its source text.
    """
    import ast
    import importlib.util

    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for module in BUILTIN_MODULES:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            continue
        with open(spec.origin, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), filename=spec.origin)
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "register_model"
                        and deco.args and isinstance(deco.args[0], ast.Constant)):
                    out[str(deco.args[0].value)] = (_summary(node), _defaults(node))
    return dict(sorted(out.items()))


def _summary(node: Any) -> str:
    import ast

    doc = ast.get_docstring(node) or ""
    return doc.split("\n", 1)[0]


def _defaults(node: Any) -> dict[str, Any]:
    """Defaults of the parameters after the first two, as :func:`register_model` records them."""
    import ast

    a = node.args
    positional = a.posonlyargs + a.args
    pos_defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    pairs = list(zip(positional, pos_defaults))[2:] + list(zip(a.kwonlyargs, a.kw_defaults))
    out: dict[str, Any] = {}
    for arg, default in pairs:
        if default is None:  # no default: inspect.Parameter.empty in the registry
            out[arg.arg] = inspect.Parameter.empty
            continue
        try:
            out[arg.arg] = ast.literal_eval(default)
        except ValueError:
            out[arg.arg] = ast.unparse(default)
    return out


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``.

    Raises:
        UnknownModelError: if ``name`` is not registered; the message lists the known names.
    """
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise UnknownModelError(f"unknown model {name!r}; known models: {known}") from None


def get_model(name: str, input_length: int, n_classes: int, **options: Any) -> "keras.Model":
    """Build the compiled model registered as ``name``.

    Args:
        name: registry name (see :func:`list_models`).
        input_length: number of pixels ``L`` of one input (the grid length).
        n_classes: number of output classes (softmax width).
        **options: builder options (see ``model_spec(name).options``).

    Returns:
        A compiled ``keras.Model``; output ``(batch_size, n_classes)`` class probabilities.

    Raises:
        UnknownModelError: unknown ``name`` (lists the known names).
        ValueError: an option the builder does not take (names the allowed ones),
            or a builder's own validation error.
    """
    spec = model_spec(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(sorted(spec.options)) or "(none)"
        raise ValueError(f"model {name!r} has no option(s) {', '.join(unknown)}; allowed: {allowed}")
    return spec.builder(int(input_length), int(n_classes), **options)


__all__ = [
    "DEFAULT_MODEL",
    "describe_builtin_models",
    "ModelSpec",
    "UnknownModelError",
    "get_model",
    "list_models",
    "model_spec",
    "register_model",
]
