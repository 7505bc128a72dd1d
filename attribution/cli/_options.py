"""CLI options built from a registry: each :class:`~attribution.registry.Option` a component declares becomes one
option of the commands that run such components (``baseline``, ``evaluate --baselines``)."""

from __future__ import annotations

import enum
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Optional, TypeVar

import typer

from ..registry import Option, Registry

F = TypeVar("F", bound=Callable[..., Any])

#: The default of the parameter :func:`registry_options` replaces (``options: dict[str, Any] = FROM_REGISTRY``).
FROM_REGISTRY: dict[str, Any] = {}


def _parameter(option: Option, flags: tuple[str, ...]) -> inspect.Parameter:
    kind: Any = option.type
    default = option.default
    if option.choices:  # Typer shows and checks an Enum's values
        kind = enum.Enum(option.name, {choice: choice for choice in option.choices}, type=str)  # type: ignore[misc,no-redef]
    if option.multiple:
        kind, default = list[kind], list(default or ())  # type: ignore[valid-type]  # a type built at run time
    elif default is None:
        kind = Optional[kind]
    info = typer.Option(default, *flags, help=option.help, min=option.minimum)
    return inspect.Parameter(option.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=info, annotation=kind)


def _plain(value: Any) -> Any:
    """A CLI value as the component takes it: an Enum member of ``choices`` as its string."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.value if isinstance(value, enum.Enum) else value


def registry_options(registry: Registry[Any], into: str, *,
                     flags: Mapping[str, tuple[str, ...]] | None = None) -> Callable[[F], F]:
    """Replace the parameter ``into`` of a Typer command by one option per option that ``registry``'s components
    declare (:meth:`Registry.options`), in its place; the command receives their values as one dict under ``into``.

    ``flags`` renames an option in this command (``{"model": ("--baseline-model",)}``). Apply it below
    ``@app.command``.
    """
    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        options = registry.options()
        clash = sorted(set(options) & set(signature.parameters))
        if clash or into not in signature.parameters:
            raise TypeError(f"{command.__name__}: options {clash} clash with its parameters, or no {into!r}")
        parameters: list[inspect.Parameter] = []
        for parameter in signature.parameters.values():
            parameters += ([_parameter(o, (flags or {}).get(o.name, o.cli_flags))
                            for o in options.values()] if parameter.name == into else [parameter])

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            values = {name: _plain(kwargs.pop(name)) for name in options}
            return command(*args, **{into: values}, **kwargs)

        run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run  # type: ignore[return-value]

    return decorate


__all__ = ["FROM_REGISTRY", "registry_options"]
