"""pgtasks.otel: a producer span at enqueue, a consumer span per attempt linked through jobs.traceparent.

Spans are collected with the OpenTelemetry SDK's in-memory exporter; jobs run on a real worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import pgtasks
from pgtasks import App
from pgtasks.core.models import EnqueueRow
from pgtasks.otel import instrument
from pgtasks.storage.jobs import _runs_now
from pgtasks.testing import drain, eager


class Traces:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def spans(self, kind: SpanKind | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if kind is None or s.kind == kind]

    def named(self, name: str) -> ReadableSpan:
        [span] = [s for s in self.exporter.get_finished_spans() if s.name == name]
        return span


@pytest.fixture
def traces() -> Iterator[Traces]:
    collected = Traces()
    yield collected
    collected.provider.shutdown()


def traceparent(conn: psycopg.Connection[Any], app: App, job_id: int) -> str | None:
    row = conn.execute(f'SELECT traceparent FROM "{app.schema}".jobs WHERE id = %s', (job_id,)).fetchone()
    assert row is not None
    value: str | None = row[0]
    return value


def w3c(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{int(span.context.trace_flags):02x}"


def test_a_job_is_one_trace_from_the_request_that_enqueued_it_into_the_task(
        target_app: App, conn: psycopg.Connection[Any], traces: Traces) -> None:
    app = target_app
    instrument(app, tracer_provider=traces.provider)

    @app.task(name="mail.send", queue="mail")
    def send(to: str) -> None:
        with traces.tracer.start_as_current_span("smtp"):  # user code on the worker's thread
            pass

    with traces.tracer.start_as_current_span("POST /signup"):
        ref = send.delay("a@example.com")
    assert [d.state for d in drain(app, queues=["mail"])] == ["completed"]

    names = ("POST /signup", "send mail", "process mail", "smtp")
    request, producer, consumer, inner = (traces.named(name) for name in names)
    assert traceparent(conn, app, ref.id) == w3c(producer)
    assert producer.kind == SpanKind.PRODUCER and producer.parent is not None
    assert request.context is not None and producer.parent.span_id == request.context.span_id
    assert dict(producer.attributes or {}) == {
        "messaging.system": "pgtasks", "messaging.destination.name": "mail", "messaging.operation.type": "send",
        "messaging.operation.name": "send", "messaging.operation": "publish", "pgtasks.task.name": "mail.send",
        "messaging.message.id": str(ref.id)}
    # The consumer span is the producer's child and links to it; the task's own span nests under it.
    assert consumer.kind == SpanKind.CONSUMER and consumer.parent is not None and producer.context is not None
    assert consumer.parent.span_id == producer.context.span_id
    assert [link.context.span_id for link in consumer.links] == [producer.context.span_id]
    assert consumer.context is not None and inner.parent is not None
    assert inner.parent.span_id == consumer.context.span_id
    assert len({s.context.trace_id for s in (request, producer, consumer, inner) if s.context}) == 1
    attributes = dict(consumer.attributes or {})
    assert {k: attributes[k] for k in ("messaging.system", "messaging.destination.name", "messaging.operation.type",
                                       "messaging.message.id", "pgtasks.job.attempt", "pgtasks.job.outcome")} == {
        "messaging.system": "pgtasks", "messaging.destination.name": "mail", "messaging.operation.type": "process",
        "messaging.message.id": str(ref.id), "pgtasks.job.attempt": 1, "pgtasks.job.outcome": "completed"}
    assert isinstance(attributes["messaging.client.id"], str) and attributes["messaging.client.id"]  # the worker id
    assert consumer.status.status_code == StatusCode.UNSET


def test_retries_and_the_final_error_are_recorded_on_each_attempts_span(app: App, traces: Traces) -> None:
    instrument(app, tracer_provider=traces.provider)

    @app.task(name="flaky", max_attempts=2, retry=pgtasks.Fixed(0))
    def flaky() -> None:
        raise ValueError("smtp said no")

    flaky.delay()
    assert [d.state for d in drain(app, with_scheduled=True)] == ["retryable", "discarded"]
    [producer] = traces.spans(SpanKind.PRODUCER)
    first, second = sorted(traces.spans(SpanKind.CONSUMER), key=lambda s: s.start_time or 0)
    for attempt, span, outcome in ((1, first, "retryable"), (2, second, "discarded")):
        attributes = dict(span.attributes or {})
        assert (attributes["pgtasks.job.attempt"], attributes["pgtasks.job.outcome"]) == (attempt, outcome)
        assert attributes["error.type"] == "ValueError"
        assert span.status.status_code == StatusCode.ERROR and span.status.description == "ValueError: smtp said no"
        [exception] = [e for e in span.events if e.name == "exception"]
        assert dict(exception.attributes or {})["exception.message"] == "smtp said no"
        assert producer.context is not None and [lk.context.span_id for lk in span.links] == [producer.context.span_id]
    assert [e.name for e in first.events] == ["exception", "pgtasks.job.retry"]
    assert [e.name for e in second.events] == ["exception"]


def test_async_enqueue_and_a_bulk_enqueue_are_traced(app: App, conn: psycopg.Connection[Any],
                                                      traces: Traces) -> None:
    instrument(app, tracer_provider=traces.provider)

    @app.task(name="crawl")
    async def crawl(n: int) -> int:
        return n

    async def enqueue() -> int:
        return (await crawl.adelay(1)).id

    single = asyncio.run(enqueue())
    many = crawl.delay_many([(2,), (3,), (4,)])
    drain(app)
    producers = traces.spans(SpanKind.PRODUCER)
    singles = [s for s in producers if "messaging.batch.message_count" not in (s.attributes or {})]
    [batch] = [s for s in producers if s not in singles]
    assert traceparent(conn, app, single) == w3c(singles[0])
    assert dict(batch.attributes or {})["messaging.batch.message_count"] == 3
    assert {traceparent(conn, app, ref.id) for ref in many} == {w3c(batch)}
    assert len(traces.spans(SpanKind.CONSUMER)) == 4


def test_without_instrument_nothing_is_stored_and_the_hot_insert_is_unchanged(
        app: App, conn: psycopg.Connection[Any]) -> None:
    @app.task(name="plain")
    def plain() -> None: ...

    ref = plain.delay()
    assert traceparent(conn, app, ref.id) is None
    assert not app.hooks  # no hook: the worker's one truth test per job stays false
    row = EnqueueRow("plain", "default", "[]", 0, 3)
    assert _runs_now(row) and not _runs_now(EnqueueRow("plain", "default", "[]", 0, 3, traceparent="00-x"))


def test_instrument_twice_is_refused_and_eager_mode_still_works(app: App, traces: Traces) -> None:
    instrument(app, tracer_provider=traces.provider)
    with pytest.raises(pgtasks.ConfigurationError, match="already called"):
        instrument(app, tracer_provider=traces.provider)

    @app.task(name="double")
    def double(n: int) -> int:
        return 2 * n

    with eager(app):
        assert double.delay(2).wait() == 4
    assert double.delay(3).id > 0 and len(traces.spans(SpanKind.PRODUCER)) == 1  # traced again after eager
