"""Unit tests (no database): argument binding, validation at enqueue, decoding to annotated types."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest

from pgtasks.core.arguments import ArgumentCodec
from pgtasks.core.errors import TaskArgumentError


class Address(msgspec.Struct):
    city: str
    zip: str


@dataclasses.dataclass
class Point:
    x: int
    y: int


def rich(when: datetime, ident: uuid.UUID, amount: Decimal, where: Address, point: Point, tags: list[str]) -> None:
    pass


def variadic(first: int, *rest: int, flag: bool = False, **extra: str) -> None:
    pass


def test_round_trip_restores_annotated_types() -> None:
    codec = ArgumentCodec(rich, "rich")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    ident = uuid.uuid4()
    encoded = codec.encode((when, ident, Decimal("12.50"), Address("Oslo", "0150"), Point(1, 2), ["a"]), {})
    args, kwargs = codec.decode(encoded)
    assert args == ()
    assert kwargs == {"when": when, "ident": ident, "amount": Decimal("12.50"), "where": Address("Oslo", "0150"),
                      "point": Point(1, 2), "tags": ["a"]}
    assert isinstance(kwargs["where"], Address)
    assert isinstance(kwargs["point"], Point)


def test_variadic_parameters_round_trip_positionally() -> None:
    codec = ArgumentCodec(variadic, "variadic")
    args, kwargs = codec.decode(codec.encode((1, 2, 3), {"flag": True, "note": "x"}))
    assert args == (1, 2, 3)
    assert kwargs == {"flag": True, "note": "x"}
    variadic(*args, **kwargs)


def test_defaults_are_filled_on_decode() -> None:
    codec = ArgumentCodec(variadic, "variadic")
    args, kwargs = codec.decode(codec.encode((7,), {}))
    assert args == (7,)
    assert kwargs == {"flag": False}


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing a required argument: 'when'"),
        ((datetime.now(UTC), uuid.uuid4(), Decimal(1), Address("a", "b"), Point(1, 2), ["a"], 9), {}, "too many"),
        ((datetime.now(UTC), uuid.uuid4(), Decimal(1), Address("a", "b"), Point(1, 2), ["a"]), {"bogus": 1},
         "unexpected keyword argument 'bogus'"),
        (("yesterday", uuid.uuid4(), Decimal(1), Address("a", "b"), Point(1, 2), ["a"]), {}, "parameter 'when'"),
        ((datetime.now(UTC), uuid.uuid4(), Decimal(1), Address("a", "b"), Point(1, 2), [1]), {}, "parameter 'tags'"),
        ((datetime.now(UTC), uuid.uuid4(), Decimal(1), object(), Point(1, 2), ["a"]), {}, "argument 'where'"),
    ],
)
def test_bad_arguments_name_the_parameter(args: tuple[object, ...], kwargs: dict[str, object], message: str) -> None:
    codec = ArgumentCodec(rich, "rich")
    with pytest.raises(TaskArgumentError, match=message) as info:
        codec.encode(args, kwargs)
    assert str(info.value).startswith("rich:")


def test_unannotated_parameters_accept_any_json() -> None:
    def loose(a, b=None):  # type: ignore[no-untyped-def]
        pass

    codec = ArgumentCodec(loose, "loose")
    assert codec.decode(codec.encode(({"k": [1, 2]},), {})) == ((), {"a": {"k": [1, 2]}, "b": None})


def mixed(a: int, /, b: int, c: int = 3, *, d: int = 4, e: int) -> None:
    pass


def optional(a: int = 1, b: str = "b") -> None:
    pass


_CALLS: list[tuple[tuple[object, ...], dict[str, object]]] = [
    ((), {}), ((1,), {}), ((1, 2), {}), ((1, 2, 3), {}), ((1, 2, 3, 4), {}), ((1, 2), {"e": 5}),
    ((1,), {"b": 2, "e": 5}), ((), {"a": 1, "b": 2, "e": 5}), ((1, 2), {"b": 2, "e": 5}),
    ((1, 2), {"e": 5, "d": 6, "c": 7}), ((1, 2), {"e": 5, "zz": 1}), ((1, 2, 3), {"c": 3, "e": 5}),
    (("x",), {}), ((), {"b": "y"}), ((1, "y"), {}),
    ((1, 2), {1: 5}),  # type: ignore[dict-item] # a non-string keyword
]


@pytest.mark.parametrize("func", [mixed, optional, rich, variadic])
@pytest.mark.parametrize(("args", "kwargs"), _CALLS)
def test_binding_agrees_with_signature_bind(func: object, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    # The fast binding answers every call as Signature.bind() does: the same stored arguments,
    # or the same error.
    fast = ArgumentCodec(func, "t")  # type: ignore[arg-type]
    reference = ArgumentCodec(func, "t")  # type: ignore[arg-type]
    reference._fast = None
    try:
        expected = msgspec.json.decode(reference.encode(args, kwargs))
    except TaskArgumentError as exc:
        with pytest.raises(TaskArgumentError) as info:
            fast.encode(args, kwargs)
        assert str(info.value) == str(exc)
        return
    assert msgspec.json.decode(fast.encode(args, kwargs)) == expected


def test_encode_many_is_encode_of_each_call() -> None:
    def floats(x: float, note: str = "") -> None:
        pass

    codec = ArgumentCodec(floats, "floats")
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = [
        ((1.5,), {}), ((), {"x": 1e20}), ((2,), {"note": "plain"}), ((-1e300,), {})]
    assert codec.encode_many(calls) == [codec.encode(a, k) for a, k in calls]
    assert '"x":100000000000000000000.0' in codec.encode_many(calls)[1]  # kept a float in jsonb
    for bad in [((float("inf"),), {}), ((1.0,), {"note": "a\x00b"}), (("one",), {}), ((object(),), {})]:
        with pytest.raises(TaskArgumentError) as single:
            codec.encode(*bad)
        with pytest.raises(TaskArgumentError) as many:
            codec.encode_many([*calls, bad, *calls])
        assert str(many.value) == str(single.value)
    assert codec.encode_many([]) == []
