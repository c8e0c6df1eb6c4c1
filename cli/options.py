"""Command-line flags derived from the config's typed options, so an option is defined once.

``model_flags(DetectorOptions, into="detector")`` gives a Typer command one ``--flag`` per field
of the pydantic model (name, help text and type from the field) and hands the command the model
built from the flags that were given. Typer has no such bridge from pydantic models, hence this
small adapter.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel


def model_flags(
    model: type[BaseModel], into: str, aliases: dict[str, tuple[str, ...]] | None = None
) -> Callable[[Callable], Callable]:
    """Decorate a Typer command: add a flag per field of ``model`` (every field optional) and
    pass ``into=model(...)`` with the flags given. Values are validated where the config is
    (``load_pipeline_config``), so errors name the config field.

    ``aliases``: extra flag names per field, e.g. ``{"image_size": ("--imgsz",)}``.
    """
    aliases = aliases or {}

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        # The command's own annotations, resolved in its module (they may be strings).
        hints = typing.get_type_hints(command, include_extras=True)
        kept = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in signature.parameters.values()
            if p.name != into
        ]
        flags = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[
                    _flag_type(info.annotation) | None,
                    typer.Option(
                        f"--{name.replace('_', '-')}", *aliases.get(name, ()), help=info.description
                    ),
                ],
            )
            for name, info in model.model_fields.items()
        ]

        @functools.wraps(command)
        def wrapper(**kwargs: Any):
            given = {name: kwargs.pop(name) for name in model.model_fields}
            # Unvalidated here on purpose: the config validates the merged result and names the
            # field (`detector.batch_size: ...`), whether the value came from a file or a flag.
            kwargs[into] = model.model_construct(**{k: v for k, v in given.items() if v is not None})
            return command(**kwargs)

        wrapper.__signature__ = signature.replace(parameters=kept + flags, return_annotation=None)
        wrapper.__annotations__ = {p.name: p.annotation for p in kept + flags}
        return wrapper

    return decorate


def _flag_type(annotation: Any) -> type:
    """The type Typer parses a flag as: optional unwrapped, Literals as str, sequences as a
    repeatable ``list[str]`` (the config validates the values)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if all(typing.get_origin(a) is Literal or a is str for a in args):
            return str
        return _flag_type(args[0])
    if origin is Annotated:
        return _flag_type(args[0])
    if origin is Literal:
        return str
    if origin in (tuple, list):
        return list[str]
    return annotation
