"""Signatures and the canvas: chain, group and chord, in Celery's shape, compiled at .delay() into one
WorkflowPlan whose every step is inserted in the caller's transaction (see docs/workflows.md).

A signature (`task.s(...)`, immutable `task.si(...)`) is a task with some arguments and options.
Each step that follows another receives its predecessor's result in its first parameter (a
group's results as a list, in member order), unless it is immutable. The database advances the
workflow (pgtasks/sql/migrations/0005_workflows.sql); nothing here runs after .delay().
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, Unpack

import msgspec
from psycopg import AsyncConnection, Connection

from pgtasks.client.enqueue import Enqueuer
from pgtasks.client.results import JobRef
from pgtasks.client.workflows import WorkflowRef
from pgtasks.core.errors import ConfigurationError, TaskArgumentError
from pgtasks.core.models import LinkErrorSpec, StepRow, WorkflowPlan
from pgtasks.core.options import EnqueueOptions, build_row

if TYPE_CHECKING:
    from pgtasks.core.definition import TaskDefinition

__all__ = ["Canvas", "Chain", "Chord", "Group", "Signature", "StepOptions", "TaskHost", "chain", "chord", "group"]

_ENCODER = msgspec.json.Encoder()


class TaskHost(Protocol):
    """What a Task enqueues through and hands its JobRefs: an App provides it."""

    enqueuer: Enqueuer


class StepOptions(TypedDict, total=False):
    """The options of one signature (`sig.set(...)`); None keeps the task's default."""

    countdown: float | timedelta | None
    eta: datetime | None
    expires: float | timedelta | datetime | None
    priority: int | None
    queue: str | None
    max_attempts: int | None


class Canvas:
    """What every signature and workflow shares: `|` builds a chain (a group followed by
    something builds a chord, as in Celery)."""

    def __or__(self, other: Canvas) -> _Workflow:
        if not isinstance(other, Canvas):
            return NotImplemented
        return Chain(self, other)


class _Workflow(Canvas):
    """The enqueue API of chains, groups and chords: every step is inserted at once."""

    link_error: Signature | None = None

    def on_error(self, errback: Signature) -> _Workflow:
        """Run `errback(job_id, error)` once if the workflow fails (see link_error)."""
        copy = self._copy()
        copy.link_error = _errback(errback)
        return copy

    def _copy(self) -> _Workflow:
        raise NotImplementedError

    def delay(self, *args: Any, **kwargs: Any) -> WorkflowRef:
        """Insert every step (in the app's bound transaction, if any); `args` and `kwargs` go to the
        first step(s), before their own, as Celery's partial arguments do."""
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: Any, **kwargs: Any) -> WorkflowRef:
        """Async twin of delay()."""
        return await self.aapply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, *,
                    connection: Connection[Any] | None = None, link_error: Signature | None = None) -> WorkflowRef:
        """delay() with the caller's `connection` (its transaction) and a `link_error` callback."""
        plan, host = compile_workflow(self, tuple(args), kwargs or {}, _errback(link_error) or self.link_error)
        return host.enqueuer.enqueue_workflow(plan, connection)

    async def aapply_async(self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, *,
                           connection: AsyncConnection[Any] | None = None,
                           link_error: Signature | None = None) -> WorkflowRef:
        """Async twin of apply_async()."""
        plan, host = compile_workflow(self, tuple(args), kwargs or {}, _errback(link_error) or self.link_error)
        return await host.enqueuer.aenqueue_workflow(plan, connection)


@dataclass(frozen=True, slots=True, eq=True)
class Signature(Canvas):
    """A task bound to arguments and options: `task.s(1, x=2)`, immutable `task.si(...)`.

    Enqueued alone (`.delay()`, or in bulk with app.enqueue_many) it is a plain job; as a step of a
    chain, group or chord it receives its predecessor's result as its first argument unless it is
    immutable.
    """

    task: TaskDefinition[Any, Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: EnqueueOptions = field(default_factory=EnqueueOptions)
    immutable: bool = False
    host: TaskHost | None = field(default=None, repr=False, compare=False)

    def set(self, **options: Unpack[StepOptions]) -> Signature:
        """A copy with these options (queue, priority, countdown, eta, expires, max_attempts)."""
        return replace(self, options=self.options.merged(EnqueueOptions(**options)))

    def configure(self, **options: Unpack[StepOptions]) -> Signature:
        """The same as set()."""
        return self.set(**options)

    def si(self) -> Signature:
        """An immutable copy: it ignores its predecessor's result."""
        return replace(self, immutable=True)

    def _host(self) -> TaskHost:
        if self.host is None:
            raise ConfigurationError(f"this signature of {self.task.name} has no App; "
                                     "make it with task.s() or task.si()")
        return self.host

    def delay(self, *args: Any, **kwargs: Any) -> JobRef:
        """Enqueue this one job, `args` and `kwargs` before and over its own (Celery's partial call)."""
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: Any, **kwargs: Any) -> JobRef:
        """Async twin of delay()."""
        return await self.aapply_async(args, kwargs)

    def _merged(self, args: Iterable[Any], kwargs: dict[str, Any] | None) -> Signature:
        return replace(self, args=(*args, *self.args), kwargs={**self.kwargs, **(kwargs or {})})

    def apply_async(self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, *,
                    connection: Connection[Any] | None = None, link: Canvas | list[Signature] | None = None,
                    link_error: Signature | None = None) -> JobRef:
        """Enqueue this job; `link` runs after it with its result, `link_error(job_id, error)` if it fails
        (then it is the first step of a workflow). Returns the job's JobRef, as Celery returns its result."""
        call = self._merged(args, kwargs)
        if link is None and link_error is None:
            return call._host().enqueuer.enqueue(call.task, call.task.build_row(call.args, call.kwargs, call.options),
                                                 connection)
        plan, host = compile_workflow(_linked(call, link), (), {}, _errback(link_error), kind="link")
        ref = host.enqueuer.enqueue_workflow(plan, connection)
        return JobRef(ref.job_ids[0], call.task.name, ref.app)

    async def aapply_async(self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, *,
                           connection: AsyncConnection[Any] | None = None,
                           link: Canvas | list[Signature] | None = None,
                           link_error: Signature | None = None) -> JobRef:
        """Async twin of apply_async()."""
        call = self._merged(args, kwargs)
        if link is None and link_error is None:
            row = call.task.build_row(call.args, call.kwargs, call.options)
            return await call._host().enqueuer.aenqueue(call.task, row, connection)
        plan, host = compile_workflow(_linked(call, link), (), {}, _errback(link_error), kind="link")
        ref = await host.enqueuer.aenqueue_workflow(plan, connection)
        return JobRef(ref.job_ids[0], call.task.name, ref.app)


def _linked(call: Signature, link: Canvas | list[Signature] | None) -> Canvas:
    if link is None:
        return call
    if isinstance(link, list | tuple):
        return Chain(call, Group(*link)) if len(link) != 1 else Chain(call, link[0])
    return Chain(call, link)


def _errback(errback: Signature | None) -> Signature | None:
    if errback is not None and not isinstance(errback, Signature):
        raise ConfigurationError(f"link_error={errback!r}: expected a signature (task.s(...) or task.si(...))")
    if errback is not None:
        # The errback is inserted by the database when a step fails, at that moment: a delay or
        # an expiry set now would have nothing to count from.
        timed = [name for name in ("countdown", "eta", "expires", "unique_key")
                 if getattr(errback.options, name) is not None]
        if timed:
            raise ConfigurationError(f"link_error={errback!r}: {', '.join(timed)} cannot be set on an errback (it "
                                     "is enqueued when a step fails); set queue, priority or max_attempts only")
    return errback


def _nodes(tasks: tuple[Any, ...]) -> tuple[Canvas, ...]:
    """chain(a, b) and chain([a, b]) (or a generator) alike, as Celery takes both."""
    if len(tasks) == 1 and not isinstance(tasks[0], Canvas) and isinstance(tasks[0], Iterable):
        tasks = tuple(tasks[0])
    for task in tasks:
        if not isinstance(task, Canvas):
            raise ConfigurationError(f"{task!r} is not a signature or workflow: use task.s(...), task.si(...), "
                                     "chain(...), group(...) or chord(...)")
    return tasks


class Chain(_Workflow):
    """Steps run one after another, each receiving the previous one's result: `chain(a.s(1), b.s())`
    or `a.s(1) | b.s()`. Its result is its last step's."""

    def __init__(self, *tasks: Canvas | Iterable[Canvas]) -> None:
        self.tasks = _nodes(tasks)
        self.link_error = None

    def _copy(self) -> Chain:
        copy = Chain(*self.tasks)
        copy.link_error = self.link_error
        return copy

    def __or__(self, other: Canvas) -> Chain:
        if not isinstance(other, Canvas):
            return NotImplemented
        return Chain(*self.tasks, other)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks))


class Group(_Workflow):
    """Steps that run in parallel: `group(a.s(i) for i in range(10))`. Its result is the list of
    its members' results, in member order (a member that is itself a group adds its list flat)."""

    def __init__(self, *tasks: Canvas | Iterable[Canvas]) -> None:
        self.tasks = _nodes(tasks)
        self.link_error = None

    def _copy(self) -> Group:
        copy = Group(*self.tasks)
        copy.link_error = self.link_error
        return copy

    def __or__(self, other: Canvas) -> Chord:
        if not isinstance(other, Canvas):
            return NotImplemented
        return Chord(self, other)

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.tasks))})"


class Chord(_Workflow):
    """A group and a callback run once after every member completed, with the list of their
    results: `chord(group, callback.s())` or `group | callback.s()`."""

    def __init__(self, header: Group | Iterable[Canvas], body: Canvas) -> None:
        self.header = header if isinstance(header, Group) else Group(header)
        if not isinstance(body, Canvas):
            raise ConfigurationError(f"chord body {body!r}: expected a signature or workflow")
        self.body = body
        self.link_error = None

    def _copy(self) -> Chord:
        copy = Chord(self.header, self.body)
        copy.link_error = self.link_error
        return copy

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


# Celery's names.
chain = Chain
group = Group
chord = Chord


# -- compiling a canvas into steps ------------------------------------------------------------------


@dataclass(slots=True)
class _Draft:
    sig: Signature
    path: str
    args: str
    waits: int
    input_from: tuple[int, ...]
    input_param: str | None
    input_list: bool
    next_steps: list[int] = field(default_factory=list)
    limit_key: str | None = None


# The steps whose results a part of the canvas hands on, and whether as a list (a group).
_Output = tuple[tuple[int, ...], bool]


def _step_limit_key(label: str, sig: Signature, encoded: str, input_param: str | None) -> str | None:
    """The step's limit_key; refuses a limited task in another queue than its own, and a per-key
    limit whose key is not known at enqueue (the step receives the previous step's result)."""
    task = sig.task
    limits = task.config.limits
    if limits is None:
        return None
    if sig.options.queue not in (None, task.config.queue):
        raise ConfigurationError(f"{label}: {task.name} has limits, enforced in its own queue "
                                 f"{task.config.queue!r}; a step of it cannot run in queue {sig.options.queue!r}")
    if limits.key is None:
        return None
    if input_param is not None:
        raise ConfigurationError(
            f"{label}: {task.name} has a per-key limit, whose key is computed from the arguments at enqueue, but "
            "this step receives the previous step's result then; make it immutable with .si(), or start the "
            "workflow with it")
    try:
        return limits.key_of(task.name, task.codec.normalized(encoded))
    except TaskArgumentError as exc:
        raise TaskArgumentError(f"{label}: {exc}") from None


class _Compiler:
    def __init__(self) -> None:
        self.drafts: list[_Draft] = []
        self.host: TaskHost | None = None

    def label(self, index: int, path: str) -> str:
        return f"workflow step {index} ({path})"

    def own(self, sig: Signature) -> None:
        host = sig._host()
        if self.host is None:
            self.host = host
        elif host is not self.host:
            raise ConfigurationError(f"{sig.task.name} belongs to another App than the workflow's first step; "
                                     "every step of a workflow must be a task of one App")

    def node(self, node: Canvas, incoming: _Output | None, partial: tuple[tuple[Any, ...], dict[str, Any]] | None,
             path: str) -> tuple[_Output, dict[str, object]]:
        if isinstance(node, Signature):
            return self.step(node, incoming, partial, path or "task")
        if isinstance(node, Chain):
            if not node.tasks:
                raise ConfigurationError("an empty chain has nothing to run")
            out, children = incoming, []
            for position, child in enumerate(node.tasks):
                out, shape = self.node(child, out, partial if position == 0 else None,
                                       _join(path, f"chain[{position}]"))
                children.append(shape)
            assert out is not None
            return out, {"type": "chain", "children": children}
        if isinstance(node, Group):
            ids: list[int] = []
            children = []
            for position, child in enumerate(node.tasks):
                (member_ids, _is_list), shape = self.node(child, incoming, partial, _join(path, f"group[{position}]"))
                ids.extend(member_ids)
                children.append(shape)
            return (tuple(ids), True), {"type": "group", "children": children}
        if isinstance(node, Chord):
            header_out, header = self.node(node.header, incoming, partial, _join(path, "chord.header"))
            out, body = self.node(node.body, header_out, None, _join(path, "chord.body"))
            return out, {"type": "chord", "header": header, "body": body}
        raise ConfigurationError(f"{node!r} is not a signature or workflow")

    def step(self, sig: Signature, incoming: _Output | None, partial: tuple[tuple[Any, ...], dict[str, Any]] | None,
             path: str) -> tuple[_Output, dict[str, object]]:
        self.own(sig)
        index, task = len(self.drafts), sig.task
        label = self.label(index, path)
        if task.config.unique is not None or sig.options.unique_key is not None:
            raise ConfigurationError(f"{label}: {task.name} has a unique key; unique keys do not apply to "
                                     "workflow steps (a waiting step holds no key)")
        args, kwargs = sig.args, sig.kwargs
        if partial is not None and not sig.immutable:
            args, kwargs = (*partial[0], *args), {**partial[1], **kwargs}
        sources, as_list = incoming if incoming is not None else ((), False)
        receives = incoming is not None and not sig.immutable
        input_param: str | None = None
        try:
            if receives:
                params = task.codec.leading_parameters(1)
                if params is None:
                    raise TaskArgumentError(
                        f"{task.name} receives the previous step's result as its first argument, but its first "
                        "parameter cannot be passed positionally (or it has none); make the step immutable "
                        "with .si() to ignore the result")
                for source in sources:
                    before = self.drafts[source]
                    if not before.sig.task.config.store_result:
                        raise ConfigurationError(
                            f"{label}: {task.name} receives the result of step {source} ({before.path}), whose task "
                            f"{before.sig.task.name} has store_result=False, so there is no result to pass on; "
                            "store its result, or make this step immutable with .si()")
                encoded = task.codec.encode_partial(args, kwargs, params)
                if sources:
                    input_param = params[0]
                else:  # after an empty group: the input is known now
                    encoded = _with(encoded, params[0], [])
            else:
                encoded = task.codec.encode(args, kwargs)
        except TaskArgumentError as exc:
            raise TaskArgumentError(f"{label}: {exc}") from None
        limit_key = _step_limit_key(label, sig, encoded, input_param)
        self.drafts.append(_Draft(sig, path, encoded, len(sources), sources if input_param else (), input_param,
                                  as_list, limit_key=limit_key))
        for source in sources:
            self.drafts[source].next_steps.append(index)
        return ((index,), False), {"type": "task", "step": index, "task": task.name, "immutable": sig.immutable}

    def rows(self) -> tuple[StepRow, ...]:
        rows = []
        for index, draft in enumerate(self.drafts):
            task = draft.sig.task
            row = build_row(task.name, draft.args, draft.sig.options, task.config.defaults())
            rows.append(StepRow(
                step=index, task=task.name, queue=row.queue, args=draft.args, priority=row.priority,
                max_attempts=row.max_attempts, waits=draft.waits, next_steps=tuple(draft.next_steps),
                input_from=draft.input_from, input_param=draft.input_param, input_list=draft.input_list,
                run_at=row.run_at, delay=row.delay, expires_at=row.expires_at, expires_in=row.expires_in,
                limit_key=draft.limit_key))
        return tuple(rows)

    def errback(self, sig: Signature, step: int) -> LinkErrorSpec:
        self.own(sig)
        task = sig.task
        label = f"link_error ({task.name})"
        try:
            if sig.immutable:
                params: list[str] | None = []
                encoded = task.codec.encode(sig.args, sig.kwargs)
            else:
                params = task.codec.leading_parameters(2)
                if params is None:
                    raise TaskArgumentError(
                        f"{task.name} must accept (job_id, error) as its first two positional parameters: it "
                        "receives the failed job's id and its last error entry; or make it immutable with .si()")
                encoded = task.codec.encode_partial(sig.args, sig.kwargs, params)
        except TaskArgumentError as exc:
            raise TaskArgumentError(f"{label}: {exc}") from None
        row = build_row(task.name, encoded, sig.options, task.config.defaults())
        return LinkErrorSpec(task=task.name, queue=row.queue, priority=row.priority, max_attempts=row.max_attempts,
                             args=msgspec.Raw(encoded.encode()), id_param=params[0] if params else None,
                             error_param=params[1] if params else None, step=step)


def _join(path: str, part: str) -> str:
    return f"{path} > {part}" if path else part


def _with(encoded: str, name: str, value: Any) -> str:
    arguments = msgspec.json.decode(encoded)
    arguments[name] = value
    return _ENCODER.encode(arguments).decode()


def compile_workflow(root: Canvas, args: tuple[Any, ...], kwargs: dict[str, Any], errback: Signature | None, *,
                     kind: str | None = None) -> tuple[WorkflowPlan, TaskHost]:
    """Validate every step (arguments bound against its signature, its input parameter reserved)
    and lay the canvas out as steps; raises TaskArgumentError / ConfigurationError naming the step."""
    compiler = _Compiler()
    partial = (args, kwargs) if args or kwargs else None
    (result_steps, result_list), structure = compiler.node(root, None, partial, "")
    if not compiler.drafts:
        raise ConfigurationError("this workflow has no step (an empty group?); give it at least one task")
    spec = compiler.errback(errback, len(compiler.drafts)) if errback is not None else None
    assert compiler.host is not None
    plan = WorkflowPlan(kind=kind or str(structure["type"]), structure=structure, steps=compiler.rows(),
                        result_steps=result_steps, result_list=result_list, link_error=spec)
    return plan, compiler.host
