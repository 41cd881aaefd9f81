"""Binds task arguments to a function's signature and encodes/decodes them with msgspec."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from pgtasks.core.errors import TaskArgumentError

_ENCODER = msgspec.json.Encoder()


class ArgumentCodec:
    """Encodes a call's arguments to JSON at enqueue time and decodes them for the handler.

    The arguments are stored as one JSON object keyed by parameter name. Encoding validates them
    against a msgspec Struct built from the signature's annotations, so a value that the worker
    could not decode is rejected at .delay() time, naming the parameter, instead of failing later.
    """

    def __init__(self, func: Callable[..., Any], task_name: str) -> None:
        self.task_name = task_name
        self.signature = inspect.signature(func)
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # noqa: BLE001 - unresolvable forward references: fall back to Any
            hints = {}
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        self._var_positional: str | None = None
        self._var_keyword: str | None = None
        for param in self.signature.parameters.values():
            annotation = hints.get(param.name, Any)
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                self._var_positional = param.name
                fields.append((param.name, list[annotation], msgspec.field(default_factory=list)))  # type: ignore[valid-type]
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                self._var_keyword = param.name
                fields.append((param.name, dict[str, annotation], msgspec.field(default_factory=dict)))  # type: ignore[valid-type]
            elif param.default is inspect.Parameter.empty:
                fields.append((param.name, annotation))
            else:
                fields.append((param.name, annotation, param.default))
        # kw_only lets a required keyword-only parameter follow an optional one, as Python allows.
        self._struct = msgspec.defstruct(
            f"{task_name}.Arguments", fields, kw_only=True, forbid_unknown_fields=True
        )
        self._decoder = msgspec.json.Decoder(self._struct)

    def encode(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Bind, validate and encode; raises TaskArgumentError naming the offending parameter."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TaskArgumentError(f"{self.task_name}: {exc}") from None
        arguments = dict(bound.arguments)
        if self._var_positional in arguments:
            arguments[self._var_positional] = list(arguments[self._var_positional])
        try:
            encoded = _ENCODER.encode(arguments)
        except (TypeError, msgspec.EncodeError) as exc:
            name = self._find_unencodable(arguments)
            raise TaskArgumentError(
                f"{self.task_name}: argument {name!r} cannot be encoded as JSON ({exc}); pass "
                "JSON-compatible values, msgspec Structs, dataclasses, datetimes, UUIDs or Decimals"
            ) from None
        try:
            self._decoder.decode(encoded)
        except msgspec.ValidationError as exc:
            raise TaskArgumentError(f"{self.task_name}: invalid argument: {_describe(exc)}") from None
        return encoded.decode()

    def decode(self, raw: str | bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Decode stored JSON back to (args, kwargs) with every value in its annotated type."""
        try:
            decoded = self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise TaskArgumentError(f"{self.task_name}: stored arguments do not fit: {_describe(exc)}") from None
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for param in self.signature.parameters.values():
            value = getattr(decoded, param.name)
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                args.extend(value)
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                kwargs.update(value)
            elif param.kind is inspect.Parameter.POSITIONAL_ONLY or (
                # Parameters before *args can only be filled positionally.
                param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and self._var_positional
            ):
                args.append(value)
            else:
                kwargs[param.name] = value
        return tuple(args), kwargs

    def normalized(self, raw: str | bytes) -> dict[str, Any]:
        """Stored arguments as {parameter: JSON-able value}, defaults filled in (for unique keys)."""
        normal: dict[str, Any] = msgspec.to_builtins(self._decoder.decode(raw))
        return normal

    @staticmethod
    def _find_unencodable(arguments: dict[str, Any]) -> str:
        for name, value in arguments.items():
            try:
                _ENCODER.encode(value)
            except (TypeError, msgspec.EncodeError):
                return name
        return "?"


def _describe(exc: msgspec.ValidationError) -> str:
    # msgspec says "... - at `$.to`"; name the parameter instead of the JSON path.
    message = str(exc)
    if " - at `$." in message:
        text, _, path = message.partition(" - at `$.")
        parameter = path.rstrip("`").split(".")[0].split("[")[0]
        return f"parameter {parameter!r}: {text}"
    return message
