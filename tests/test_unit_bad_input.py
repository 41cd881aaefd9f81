"""Unit tests (no database): bad input is refused with a pgtasks error naming the parameter or the
name, never a raw exception, and a value the jsonb column would change is refused or kept exactly.

The same inputs through a real database and a running worker: tests/test_bad_input.py.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import msgspec
import pytest

from pgtasks import App, ConfigurationError, TaskArgumentError, WorkerConfig
from pgtasks.core.arguments import ArgumentCodec
from pgtasks.core.definition import TaskConfig, TaskDefinition
from pgtasks.core.options import EnqueueOptions


def take(payload: Any = None, text: str = "", ratio: float = 0.0) -> None:
    pass


CODEC = ArgumentCodec(take, "take")


def self_containing() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def deeply_nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@dataclasses.dataclass
class Reading:
    value: float


class Sample(msgspec.Struct):
    label: str


# (keyword arguments, what the message must say); every one names its parameter.
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"payload": self_containing()}, "argument 'payload': it contains itself"),
    ({"payload": {"a": [self_containing()]}}, "argument 'payload': it contains itself"),
    ({"payload": deeply_nested(100_000)}, "argument 'payload': .* nested too deeply"),
    ({"text": "a\ud800b"}, r"argument 'text': it holds a lone surrogate '\\ud800'"),
    ({"payload": {"k\udfff": 1}}, r"argument 'payload': it holds a lone surrogate '\\udfff'"),
    ({"payload": math.nan}, "argument 'payload': nan has no JSON form"),
    ({"payload": math.inf}, "argument 'payload': inf has no JSON form"),
    ({"payload": [1, {"x": -math.inf}]}, "argument 'payload': -inf has no JSON form"),
    ({"payload": Reading(math.nan)}, "argument 'payload': nan has no JSON form"),
    ({"ratio": math.nan}, "argument 'ratio': nan has no JSON form"),  # a typed float: no more "got null"
    ({"text": "a\x00b"}, r"argument 'text': 'a\\x00b' contains a NUL character"),
    ({"payload": {"key\x00": 1}}, "argument 'payload': 'key\\\\x00' contains a NUL character"),
    ({"payload": [Sample("x\x00")]}, "argument 'payload': 'x\\\\x00' contains a NUL character"),
]


@pytest.mark.parametrize(("kwargs", "message"), REFUSED)
def test_bad_values_raise_task_argument_error_naming_the_parameter(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TaskArgumentError, match=message) as info:
        CODEC.encode((), kwargs)
    assert str(info.value).startswith("take: argument ")
    raw = info.value.__cause__ or (None if info.value.__suppress_context__ else info.value.__context__)
    assert raw is None  # no raw exception chained to read past


def test_a_nul_after_another_bad_value_still_names_its_own_parameter() -> None:
    with pytest.raises(TaskArgumentError, match="argument 'text'"):
        CODEC.encode((None, "x\x00"), {})


@pytest.mark.parametrize("value", [1e16, -1e16, 1.5e300, 1e23, 2.0**53, 9.1e15, 1e-7, 5e-324, 0.1, -2.5, 1.0])
def test_floats_that_jsonb_would_turn_into_integers_are_written_to_stay_floats(value: float) -> None:
    encoded = CODEC.encode((), {"payload": [value], "ratio": value})
    # jsonb prints a number in positional form: a float stays a float only if its text has a fraction.
    assert not re.search(r"[0-9]e[0-9]", encoded)
    _, kwargs = CODEC.decode(encoded)
    assert kwargs["payload"] == [value] and type(kwargs["payload"][0]) is float
    assert kwargs["ratio"] == value


def test_text_that_only_looks_like_a_nul_escape_or_a_float_is_kept() -> None:
    tricky = {"text": "\\u0000 and 1e16 and null", "payload": ["\\u0000", "nan", None]}
    _, kwargs = CODEC.decode(CODEC.encode((), tricky))
    assert kwargs == {**tricky, "ratio": 0.0}


def test_bytes_that_look_like_a_huge_float_to_the_msgpack_check_are_kept() -> None:
    def store(blob: bytes, ratio: float) -> None:
        pass

    codec = ArgumentCodec(store, "store")
    blob = b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00"  # msgpack's bytes for the float NaN
    assert codec.decode(codec.encode((blob, 2.5), {})) == ((), {"blob": blob, "ratio": 2.5})


def test_an_unencodable_object_names_its_parameter() -> None:
    with pytest.raises(TaskArgumentError, match="argument 'payload': it cannot be encoded as JSON"):
        CODEC.encode((object(),), {})


# -- names and queues -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t\x00nul", "\x00", ""])
def test_an_empty_task_name_or_one_with_a_nul_is_a_configuration_error(name: str) -> None:
    with pytest.raises(ConfigurationError, match="name="):
        TaskDefinition(take, TaskConfig.create(name))


def test_app_task_refuses_a_nul_in_the_name() -> None:
    app = App("postgresql://unused@127.0.0.1:1/unused")
    with pytest.raises(ConfigurationError, match=r"name='t\\x00nul': must not contain a NUL character"):
        app.task(name="t\x00nul")(take)
    assert app.tasks == {}


UNSERVABLE_QUEUES = [(" mail", "whitespace.*use 'mail'"), ("mail ", "whitespace.*use 'mail'"),
                     ("\tmail", "whitespace"), ("mail,sms", "comma.*use e.g. 'mail-sms'"), (",", "comma"),
                     ("ma\x00il", "NUL character")]


@pytest.mark.parametrize(("queue", "message"), UNSERVABLE_QUEUES)
def test_a_queue_no_worker_could_serve_is_refused_at_declaration(queue: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"queue={queue!r}: .*{message}".replace("\\", "\\\\")):
        TaskConfig.create("t", queue=queue)


@pytest.mark.parametrize(("queue", "message"), UNSERVABLE_QUEUES)
def test_a_queue_no_worker_could_serve_is_refused_at_enqueue(queue: str, message: str) -> None:
    definition = TaskDefinition(take, TaskConfig.create("t"))
    with pytest.raises(ConfigurationError, match=message):
        definition.build_row((), {}, EnqueueOptions(queue=queue))


@pytest.mark.parametrize(("queue", "message"), UNSERVABLE_QUEUES)
def test_a_worker_refuses_a_queue_it_could_not_serve(queue: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        WorkerConfig(queues=[queue])


def test_worker_queues_as_one_string_read_like_the_command_line() -> None:
    assert WorkerConfig(queues="mail, sms ,default").queues == ("mail", "sms", "default")


# A tab or newline inside a name is odd but servable: `--queues $'a\tb'` passes it through.
@pytest.mark.parametrize("queue", ["default", "mail.high", "tenant:42/reports", "émail", "with inner space", "a\tb"])
def test_servable_queue_names_are_still_accepted(queue: str) -> None:
    assert TaskConfig.create("t", queue=queue).queue == queue
    assert WorkerConfig(queues=[queue]).queues == (queue,)


def test_a_unique_key_with_a_nul_is_refused_before_the_database() -> None:
    definition = TaskDefinition(take, TaskConfig.create("t"))
    with pytest.raises(ConfigurationError, match=r"unique_key=.*NUL"):
        definition.build_row((), {}, EnqueueOptions(unique_key="k\x00"))
