"""OpenTelemetry tracing of jobs: a producer span at enqueue, a consumer span around each attempt.

The producer span's W3C trace context is stored with the job (`jobs.traceparent`); the worker's
consumer span is its child and also links to it, so a trace runs from the web request that
enqueued a job into the task, and backends that draw messaging links show them too. Names and
attributes follow OpenTelemetry's messaging semantic conventions
(https://opentelemetry.io/docs/specs/semconv/messaging/messaging-spans/).

Nothing here runs unless `instrument(app)` was called: the enqueuer is wrapped and the hooks are
registered then, so an App without tracing pays nothing, not even a truth test per enqueue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pgtasks.client.enqueue import Enqueuer
from pgtasks.core.errors import ConfigurationError
from pgtasks.core.hooks import Hooks, JobEvent
from pgtasks.core.models import EnqueueRow, WorkflowPlan

if TYPE_CHECKING:
    from psycopg import AsyncConnection, Connection

    from pgtasks.client.results import JobRef
    from pgtasks.client.workflows import WorkflowRef
    from pgtasks.core.definition import TaskDefinition

SYSTEM = "pgtasks"  # messaging.system: not one of the registered values, which the conventions allow
_PROPAGATOR = TraceContextTextMapPropagator()  # W3C traceparent, whatever the global propagator is
_SPAN = "pgtasks.otel.span"  # JobEvent.extra keys: the attempt's span and its context token
_ATTACHED = "pgtasks.otel.token"



class Traceable(Protocol):
    """What instrument() needs of an App: its enqueuer seam and its hooks."""

    enqueuer: Enqueuer

    @property
    def hooks(self) -> Hooks: ...


def _attributes(operation: str, queue: str, task: str) -> dict[str, Any]:
    # messaging.operation is the name older backends read; semconv 1.26 renamed it operation.type/name.
    return {"messaging.system": SYSTEM, "messaging.destination.name": queue,
            "messaging.operation.type": operation, "messaging.operation.name": operation,
            "messaging.operation": "publish" if operation == "send" else operation, "pgtasks.task.name": task}


def _traceparent() -> str | None:
    """The W3C traceparent of the current span (the producer span, made current around the insert)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


class TracingEnqueuer:
    """An Enqueuer around another: each enqueue runs in a producer span (`send <queue>`) whose
    traceparent is written with the job, in the same statement and transaction."""

    def __init__(self, inner: Enqueuer, tracer: Tracer) -> None:
        self.inner = inner
        self.tracer = tracer

    def _span(self, queue: str, task: str, count: int = 1) -> Any:
        attributes = _attributes("send", queue, task)
        if count > 1:
            attributes["messaging.batch.message_count"] = count
        return self.tracer.start_as_current_span(f"send {queue}", kind=SpanKind.PRODUCER, attributes=attributes)

    @staticmethod
    def _traced(rows: Sequence[EnqueueRow]) -> list[EnqueueRow]:
        parent = _traceparent()
        return [msgspec.structs.replace(row, traceparent=parent) for row in rows]

    @staticmethod
    def _sent(span: trace.Span, refs: Sequence[JobRef]) -> None:
        if len(refs) == 1:
            span.set_attribute("messaging.message.id", str(refs[0].id))

    def enqueue(self, task: TaskDefinition[Any, Any], row: EnqueueRow, connection: Connection[Any] | None) -> JobRef:
        with self._span(row.queue, task.name) as span:
            ref = self.inner.enqueue(task, self._traced([row])[0], connection)
            self._sent(span, [ref])
            return ref

    async def aenqueue(self, task: TaskDefinition[Any, Any], row: EnqueueRow,
                       connection: AsyncConnection[Any] | None) -> JobRef:
        with self._span(row.queue, task.name) as span:
            ref = await self.inner.aenqueue(task, self._traced([row])[0], connection)
            self._sent(span, [ref])
            return ref

    def _batch_span(self, tasks: Sequence[TaskDefinition[Any, Any]], rows: Sequence[EnqueueRow]) -> Any:
        """One span for a bulk enqueue (the conventions' batch send); its rows share its context."""
        queues, names = {row.queue for row in rows}, {task.name for task in tasks}
        return self._span(queues.pop() if len(queues) == 1 else "(many)",
                          names.pop() if len(names) == 1 else "(many)", count=len(rows))

    def enqueue_many(self, tasks: Sequence[TaskDefinition[Any, Any]], rows: Sequence[EnqueueRow],
                     connection: Connection[Any] | None) -> list[JobRef]:
        with self._batch_span(tasks, rows) as span:
            refs = self.inner.enqueue_many(tasks, self._traced(rows), connection)
            self._sent(span, refs)
            return refs

    async def aenqueue_many(self, tasks: Sequence[TaskDefinition[Any, Any]], rows: Sequence[EnqueueRow],
                            connection: AsyncConnection[Any] | None) -> list[JobRef]:
        with self._batch_span(tasks, rows) as span:
            refs = await self.inner.aenqueue_many(tasks, self._traced(rows), connection)
            self._sent(span, refs)
            return refs

    def _workflow_span(self, plan: WorkflowPlan) -> Any:
        """One span for a workflow's insert. Its steps store no traceparent of their own (the step
        rows have no such column in their insert); each attempt still gets its consumer span."""
        queues, names = {row.queue for row in plan.steps}, {row.task for row in plan.steps}
        return self._span(queues.pop() if len(queues) == 1 else "(many)",
                          names.pop() if len(names) == 1 else "(many)", count=len(plan.steps))

    def enqueue_workflow(self, plan: WorkflowPlan, connection: Connection[Any] | None) -> WorkflowRef:
        with self._workflow_span(plan) as span:
            ref = self.inner.enqueue_workflow(plan, connection)
            span.set_attribute("pgtasks.workflow.id", ref.id)
            return ref

    async def aenqueue_workflow(self, plan: WorkflowPlan, connection: AsyncConnection[Any] | None) -> WorkflowRef:
        with self._workflow_span(plan) as span:
            ref = await self.inner.aenqueue_workflow(plan, connection)
            span.set_attribute("pgtasks.workflow.id", ref.id)
            return ref


class JobTracer:
    """The worker side: hooks that open the consumer span before an attempt and close it after."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def before(self, event: JobEvent) -> None:
        producer = _PROPAGATOR.extract({"traceparent": event.traceparent}) if event.traceparent else None
        producer_span = trace.get_current_span(producer).get_span_context() if producer is not None else None
        links = [Link(producer_span)] if producer_span is not None and producer_span.is_valid else []
        attributes = {**_attributes("process", event.queue, event.task), "messaging.message.id": str(event.id),
                      "messaging.client.id": event.worker_id, "pgtasks.job.attempt": event.attempt,
                      "pgtasks.job.max_attempts": event.max_attempts}
        span = self.tracer.start_span(f"process {event.queue}", context=producer, kind=SpanKind.CONSUMER,
                                      links=links, attributes=attributes)
        event.extra[_SPAN] = span
        # before_job runs in the job's own context: spans the task opens (also on its thread) nest here.
        event.extra[_ATTACHED] = otel_context.attach(trace.set_span_in_context(span))

    def error(self, event: JobEvent) -> None:
        span: trace.Span | None = event.extra.get(_SPAN)
        if span is not None and event.error is not None:
            span.record_exception(event.error)
            span.set_attribute("error.type", type(event.error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, f"{type(event.error).__name__}: {event.error}"))

    def after(self, event: JobEvent) -> None:
        span: trace.Span | None = event.extra.pop(_SPAN, None)
        token = event.extra.pop(_ATTACHED, None)
        if span is None:
            return
        span.set_attribute("pgtasks.job.outcome", event.state or "unknown")
        if event.state == "retryable":  # the job goes on: an event on this attempt's span
            span.add_event("pgtasks.job.retry", {"pgtasks.job.attempt": event.attempt,
                                                 "pgtasks.job.max_attempts": event.max_attempts})
        elif event.state == "discarded" and event.error is None:  # no exception to record (an unknown task)
            span.set_status(Status(StatusCode.ERROR, "discarded"))
        if token is not None:
            otel_context.detach(token)
        span.end()


def instrument(app: Traceable, *, tracer_provider: TracerProvider | None = None) -> None:
    """Trace `app`'s enqueues and jobs with OpenTelemetry (the global tracer provider by default).

    Call it once, where the App is built, in the web process and the worker alike.
    """
    if isinstance(app.enqueuer, TracingEnqueuer):
        raise ConfigurationError("pgtasks.otel.instrument(app) was already called for this App; call it once")
    tracer = trace.get_tracer("pgtasks", tracer_provider=tracer_provider)
    app.enqueuer = TracingEnqueuer(app.enqueuer, tracer)
    jobs = JobTracer(tracer)
    app.hooks.before.append(jobs.before)
    app.hooks.error.append(jobs.error)
    app.hooks.after.append(jobs.after)
