"""Binds task arguments to a function's signature and encodes/decodes them with msgspec."""

from __future__ import annotations

import inspect
import math
import re
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgspec

from pgtasks.core.errors import TaskArgumentError, UnknownTaskError

_ENCODER = msgspec.json.Encoder()

# What a value can hold that survives msgspec but not the trip through PostgreSQL's jsonb column:
# msgspec writes NaN and infinity as `null` (the task would receive None), a NUL character as
# `\\u0000` (jsonb refuses it), and a float of 1e16 or more as `1e16`, which jsonb hands back as
# the integer 10000000000000000 (an `Any` parameter would receive an int). Only a call that may hold
# one pays for a walk through its values in Python; the others, for a byte search and a msgpack encoding.
_MAY_HOLD_NUL = b"\\u0000"
# Floats are told apart in a msgpack encoding (a few microseconds), where each one is 0xcb and its 8
# IEEE bytes: this matches every float whose exponent is 2**53 or more, NaN and infinity included, and
# nothing else but the rare string that happens to hold these bytes. The JSON text cannot tell a NaN
# from a None (both `null`), and a regex over it for `1e16` is slow on text full of "e"s.
_MSGPACK = msgspec.msgpack.Encoder()
_HUGE_OR_NON_FINITE_FLOAT = re.compile(rb"\xcb(?:[\x43\xc3][\x40-\xff]|[\x44-\x7f\xc4-\xff])")

# Why an argument cannot be encoded, by the exception msgspec (or Python) raised for it.
_UNENCODABLE = (TypeError, ValueError, RecursionError, msgspec.EncodeError)


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
        self._fields = fields  # kept for the structs of partial calls (workflow steps)
        self._partial_decoders: dict[tuple[str, ...], msgspec.json.Decoder[Any]] = {}
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
        self._fast = _FastBinding.of(self.signature)
        # kw_only lets a required keyword-only parameter follow an optional one, as Python allows.
        self._struct = msgspec.defstruct(
            f"{task_name}.Arguments", fields, kw_only=True, forbid_unknown_fields=True
        )
        self._decoder = msgspec.json.Decoder(self._struct)
        self._batch_decoder: msgspec.json.Decoder[Any] | None = None  # list[Arguments], made on first use

    def encode(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Bind, validate and encode; raises TaskArgumentError naming the offending parameter."""
        return self._encode_bound(self._bind(args, kwargs), self._decoder)

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, as Signature.bind() gives them (defaults left out)."""
        if self._fast is not None:
            arguments = self._fast.bind(args, kwargs)
            if arguments is not None:
                return arguments
        # Signature.bind() for what the fast path does not take: *args / **kwargs parameters, and
        # every call it refuses, so the error message is Python's own.
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TaskArgumentError(f"{self.task_name}: {exc}") from None
        return dict(bound.arguments)

    def encode_many(self, calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[str]:
        """encode() of many calls, the checks done once for the whole batch where they can be: one
        msgpack encoding and pattern search for the floats jsonb would change, one decode of the
        batch to validate it. A call that fails a check is found by doing that check call by call,
        so it raises the same TaskArgumentError encode() would."""
        arguments = [self._bind(args, kwargs) for args, kwargs in calls]
        if self._var_positional is not None:
            for bound in arguments:
                if self._var_positional in bound:
                    bound[self._var_positional] = list(bound[self._var_positional])
        try:
            encoded = [_ENCODER.encode(bound) for bound in arguments]
        except _UNENCODABLE:
            return [self._encode_bound(bound, self._decoder) for bound in arguments]  # raises for the bad one
        batch = b"[" + b",".join(encoded) + b"]"
        if _needs_inspection(arguments, batch):
            for index, bound in enumerate(arguments):
                if _needs_inspection(bound, encoded[index]):
                    encoded[index] = self._checked(bound)
            batch = b"[" + b",".join(encoded) + b"]"
        if self._batch_decoder is None:
            self._batch_decoder = msgspec.json.Decoder(list[self._struct])  # type: ignore[name-defined]
        try:
            self._batch_decoder.decode(batch)
        except msgspec.ValidationError:
            for one in encoded:  # the first call that does not fit raises, naming its parameter
                self._validate(one, self._decoder)
            raise
        return [one.decode() for one in encoded]

    def _validate(self, encoded: bytes, decoder: msgspec.json.Decoder[Any]) -> None:
        try:
            decoder.decode(encoded)
        except msgspec.ValidationError as exc:
            raise TaskArgumentError(f"{self.task_name}: invalid argument: {_describe(exc)}") from None

    def _encode_bound(self, arguments: dict[str, Any], decoder: msgspec.json.Decoder[Any]) -> str:
        """Encode bound arguments and check them against the types `decoder` expects."""
        if self._var_positional in arguments:
            arguments[self._var_positional] = list(arguments[self._var_positional])
        try:
            encoded = _ENCODER.encode(arguments)
        except _UNENCODABLE as exc:
            raise self._unencodable(arguments, exc) from None
        if _needs_inspection(arguments, encoded):
            encoded = self._checked(arguments)
        self._validate(encoded, decoder)
        return encoded.decode()

    def leading_parameters(self, count: int) -> list[str] | None:
        """The names of the first `count` parameters if each can be passed positionally; else None.

        A workflow step receives its predecessor's result in its first parameter (a link_error
        callback the failed job's id and error in its first two), as Celery passes it first.
        """
        names: list[str] = []
        for param in self.signature.parameters.values():
            if len(names) == count:
                break
            if param.kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
                return None
            names.append(param.name)
        return names if len(names) == count else None

    def encode_partial(self, args: tuple[Any, ...], kwargs: dict[str, Any], reserved: list[str]) -> str:
        """encode() for a call whose first parameters (`reserved`) are filled in later, by the
        database: the rest are bound after them, validated and encoded; the reserved ones are not
        stored. Raises TaskArgumentError naming a reserved parameter that was passed anyway."""
        for name in reserved:
            if name in kwargs:
                raise TaskArgumentError(f"{self.task_name}: parameter {name!r} is filled in by the workflow "
                                        f"(it receives the previous step's result); do not pass it")
        placeholders = [None] * len(reserved)
        try:
            bound = self.signature.bind(*placeholders, *args, **kwargs)
        except TypeError as exc:
            raise TaskArgumentError(f"{self.task_name}: {exc} (its first parameter {reserved[0]!r} is filled "
                                    f"in by the workflow)") from None
        arguments = {k: v for k, v in bound.arguments.items() if k not in reserved}
        return self._encode_bound(arguments, self._partial_decoder(tuple(reserved)))

    def _partial_decoder(self, reserved: tuple[str, ...]) -> msgspec.json.Decoder[Any]:
        decoder = self._partial_decoders.get(reserved)
        if decoder is None:
            fields = [f for f in self._fields if f[0] not in reserved]
            struct = msgspec.defstruct(f"{self.task_name}.PartialArguments", fields, kw_only=True,
                                       forbid_unknown_fields=True)
            decoder = self._partial_decoders[reserved] = msgspec.json.Decoder(struct)
        return decoder

    def decode(self, raw: str | bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Decode stored JSON back to (args, kwargs) with every value in its annotated type."""
        try:
            decoded = self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            call = by_name_call(raw)
            if call is None:
                raise TaskArgumentError(f"{self.task_name}: stored arguments do not fit: {_describe(exc)}") from None
            # Enqueued by name (app.send_task): checked against the signature here, for the first time.
            try:
                return self.decode(self.encode(*call))
            except TaskArgumentError as bad:
                raise TaskArgumentError(f"{bad} (the job was enqueued by name, so its arguments were first "
                                        "checked against the task's signature by this worker)") from None
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

    def _unencodable(self, arguments: dict[str, Any], exc: Exception) -> TaskArgumentError:
        """The error for arguments msgspec refused: which parameter, and what about it."""
        for name, value in arguments.items():
            try:
                _ENCODER.encode(value)
            except _UNENCODABLE as own:
                return self._encode_error(name, own)
        return self._encode_error("?", exc)

    def _encode_error(self, name: str, exc: Exception) -> TaskArgumentError:
        if isinstance(exc, RecursionError):
            reason = "it contains itself (a circular reference) or is nested too deeply"
            fix = "pass a copy without the cycle, or flatten it"
        elif isinstance(exc, UnicodeEncodeError):
            reason = f"it holds a lone surrogate {exc.object[exc.start:exc.end]!r}, which UTF-8 cannot encode"
            fix = "pass valid Unicode text (decode bytes with errors='replace', or pass bytes)"
        else:
            reason = f"it cannot be encoded as JSON ({exc})"
            fix = "pass JSON-compatible values, msgspec Structs, dataclasses, datetimes, UUIDs or Decimals"
        return TaskArgumentError(f"{self.task_name}: argument {name!r}: {reason}; {fix}")

    def _checked(self, arguments: dict[str, Any]) -> bytes:
        """The arguments encoded again, after refusing what jsonb cannot keep, with big floats kept floats."""
        plain = {name: msgspec.to_builtins(value) for name, value in arguments.items()}
        for name, value in plain.items():
            problem = _jsonb_problem(value)
            if problem is not None:
                raise TaskArgumentError(f"{self.task_name}: argument {name!r}: {problem}")
        kept: dict[str, Any] = {}
        for name, value in plain.items():
            try:
                kept[name] = _keep_floats(value)
            except RecursionError:  # msgspec nests deeper in C than this Python walk can
                raise self._encode_error(name, RecursionError()) from None
        return _ENCODER.encode(kept)


# The stored form of a call enqueued by name only (app.send_task / app.signature with no local
# definition): the sender knows no parameter names, so positional arguments are kept as a list under
# BY_NAME_ARGS, keyword arguments as themselves, and the values the database fills in later (a workflow
# step's input, an errback's job id and error) under "*0", "*1", ..., which come first positionally.
# No Python parameter name starts with "*", so this form cannot be mistaken for a normal one, and a
# normal decode of it always fails (unknown field) before by_name_call() is tried: the normal path
# pays nothing for it.
BY_NAME_ARGS = "*args"
_RESERVED_PREFIX = "*"


def by_name_call(raw: str | bytes) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """(args, kwargs) of arguments stored in the by-name form; None if `raw` is not in that form."""
    try:
        stored = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    if not isinstance(stored, dict) or not isinstance(stored.get(BY_NAME_ARGS), list):
        return None
    positional = stored.pop(BY_NAME_ARGS)
    leading: list[Any] = []
    while f"{_RESERVED_PREFIX}{len(leading)}" in stored:
        leading.append(stored.pop(f"{_RESERVED_PREFIX}{len(leading)}"))
    if any(key.startswith(_RESERVED_PREFIX) for key in stored):
        return None
    return (*leading, *positional), stored


class ByNameCodec(ArgumentCodec):
    """The codec of a task known here by name only: no signature to bind or check against.

    What it checks: every value can be stored as JSON in jsonb and comes back the same (the checks
    of any task's arguments, NaN, NUL and big floats included), and keyword names are strings that
    do not start with "*". What it cannot check: the number of arguments, their names, their types,
    or that the task exists. The worker that runs the job checks those against the real signature
    (TaskArgumentError, naming the parameter). decode() refuses: nothing here can run the task.
    """

    def __init__(self, task_name: str) -> None:
        super().__init__(_any_call, task_name)

    def encode(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        for key in kwargs:
            if not isinstance(key, str) or key.startswith(_RESERVED_PREFIX):
                raise TaskArgumentError(f"{self.task_name}: keyword argument {key!r}: keyword names must be "
                                        f"strings not starting with {_RESERVED_PREFIX!r} (those are reserved "
                                        "for the stored form of a call by name)")
        arguments = {BY_NAME_ARGS: list(args), **kwargs}
        try:
            encoded = _ENCODER.encode(arguments)
        except _UNENCODABLE as exc:
            raise self._unencodable(_named_values(args, kwargs), exc) from None
        if _needs_inspection(arguments, encoded):
            self._checked(_named_values(args, kwargs))  # raises naming the value; big floats kept below
            encoded = self._checked(arguments)
        return encoded.decode()

    def encode_many(self, calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[str]:
        return [self.encode(args, kwargs) for args, kwargs in calls]

    def encode_partial(self, args: tuple[Any, ...], kwargs: dict[str, Any], reserved: list[str]) -> str:
        # The reserved "*N" keys are added by the database; encode() refuses them from the caller.
        return self.encode(args, kwargs)

    def leading_parameters(self, count: int) -> list[str] | None:
        return [f"{_RESERVED_PREFIX}{index}" for index in range(count)]

    def decode(self, raw: str | bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        raise UnknownTaskError(
            f"{self.task_name} is not defined in this process (it is known here by name only), so it cannot "
            "run here: import the module that defines it, or run it on a worker that has it "
            "(eager mode runs only tasks defined in the process)")

    def normalized(self, raw: str | bytes) -> dict[str, Any]:
        normal: dict[str, Any] = msgspec.json.decode(raw)
        return normal


class _FastBinding:
    """Binds a call to a signature without *args or **kwargs parameters in a few dict and set
    operations: inspect.Signature.bind() costs several microseconds a call in Python, most of an
    enqueue's client work (docs/performance.md, "Bulk and single enqueue"). It answers None for a
    call it does not accept (too many positional arguments, an unknown, duplicate or positional-only
    keyword, a required parameter missing); the caller then binds with Signature.bind(), which
    raises Python's own message for it."""

    __slots__ = ("keyword", "positional", "required", "required_positional")

    def __init__(self, positional: tuple[str, ...], keyword: frozenset[str], required: frozenset[str],
                 required_positional: int | None) -> None:
        self.positional = positional  # the names a positional argument fills, in order
        self.keyword = keyword  # the names a keyword argument may have
        self.required = required  # the parameters with no default
        # How many positional arguments fill every required parameter (None: a required parameter
        # is keyword-only, so positional arguments alone never do).
        self.required_positional = required_positional

    @classmethod
    def of(cls, signature: inspect.Signature) -> _FastBinding | None:
        params = list(signature.parameters.values())
        if any(p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD) for p in params):
            return None
        positional = tuple(p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                                inspect.Parameter.POSITIONAL_OR_KEYWORD))
        keyword = frozenset(p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY)
        required = [p for p in params if p.default is inspect.Parameter.empty]
        required_positional: int | None = 0
        for p in required:
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                required_positional = None
                break
            required_positional = positional.index(p.name) + 1
        return cls(positional, keyword, frozenset(p.name for p in required), required_positional)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        if not args:
            if kwargs.keys() <= self.keyword and self.required <= kwargs.keys():
                return dict(kwargs)
            return None
        if len(args) > len(self.positional):
            return None
        arguments = dict(zip(self.positional, args, strict=False))
        if not kwargs:
            if self.required_positional is not None and len(args) >= self.required_positional:
                return arguments
            return None
        if not kwargs.keys() <= self.keyword or not kwargs.keys().isdisjoint(arguments):
            return None
        arguments.update(kwargs)
        return arguments if self.required <= arguments.keys() else None


def _any_call(*args: Any, **kwargs: Any) -> None:
    """The signature a by-name task is given: it accepts any call."""


def _named_values(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A call's values by what an error message calls them: args[0], ..., then keyword names."""
    return {**{f"args[{index}]": value for index, value in enumerate(args)}, **kwargs}


def _describe(exc: msgspec.ValidationError) -> str:
    # msgspec says "... - at `$.to`"; name the parameter instead of the JSON path.
    message = str(exc)
    if " - at `$." in message:
        text, _, path = message.partition(" - at `$.")
        parameter = path.rstrip("`").split(".")[0].split("[")[0]
        return f"parameter {parameter!r}: {text}"
    return message


def _needs_inspection(arguments: dict[str, Any] | list[dict[str, Any]], encoded: bytes) -> bool:
    if _MAY_HOLD_NUL in encoded:
        return True
    try:
        return _HUGE_OR_NON_FINITE_FLOAT.search(_MSGPACK.encode(arguments)) is not None
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):  # e.g. an int beyond 64 bits
        return True


def _walk(value: Any) -> Iterator[Any]:
    """Every value and dict key inside a to_builtins() tree; iterative, so depth costs no stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _jsonb_problem(plain: Any) -> str | None:
    """Why `plain` cannot be stored as jsonb and given back unchanged, with the fix; None if it can."""
    for item in _walk(plain):
        if isinstance(item, float) and not math.isfinite(item):
            # Refused, not kept: JSON has no NaN or infinity, and msgspec would store null.
            return (f"{item!r} has no JSON form (the task would receive None); pass None, "
                    "or a string such as 'nan' or 'inf' and convert it in the task")
        if isinstance(item, str) and "\x00" in item:
            return (f"{_clip(item)!r} contains a NUL character (\\x00), which PostgreSQL cannot store in "
                    "jsonb; remove it, or pass the data as bytes (stored base64-encoded)")
    return None


def _keep_floats(plain: Any) -> Any:
    """`plain` with every float msgspec writes in exponent form (1e16 and up) as a msgspec.Raw
    in positional form with a fraction (10000000000000000.0), which jsonb gives back as a float."""
    if isinstance(plain, float) and abs(plain) >= 1e16:
        # Exact: a float this large is a whole number, and its exact digits parse back to it.
        return msgspec.Raw(f"{int(plain)}.0".encode())
    if isinstance(plain, dict):
        return {key: _keep_floats(value) for key, value in plain.items()}
    if isinstance(plain, list | tuple):
        return [_keep_floats(value) for value in plain]
    return plain


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
