"""pgtasks.dashboard.graph without a database: the layered layout of workflows the canvas really
compiles (chains left to right, groups stacked, chords as header then body), the edges from the
steps' successors, big groups and long chains collapsed, steps outside the structure, positions."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest

from pgtasks import App, chain, chord, group
from pgtasks.client.canvas import Canvas, compile_workflow
from pgtasks.client.workflows import step_paths
from pgtasks.dashboard.graph import GAP_X, NODE_H, NODE_W, PAD, ROW_H, Graph, Step, layout

# Compiling a canvas needs an App's tasks, never its database.
app = App("postgresql://nobody@127.0.0.1:1/unused")


@app.task(name="add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="total")
def total(values: list[int]) -> int:
    return sum(values)


@app.task(name="a.rather.long.module.path.task_name")
def long_name(x: int) -> int:
    return x


JOB_BASE = 1000  # job ids of the steps: step i is job JOB_BASE + i


def compiled(canvas: Canvas, *, states: dict[int, str] | None = None,
             drop: Sequence[int] = ()) -> tuple[dict[str, Any], list[Step]]:
    """The structure and steps the database would hold for `canvas` (steps in `drop` deleted)."""
    plan, _ = compile_workflow(canvas, (), {}, None)
    steps = [Step(index=r.step, job_id=JOB_BASE + r.step, task=r.task, state=(states or {}).get(r.step, "waiting"),
                  next_ids=tuple(JOB_BASE + s for s in r.next_steps)) for r in plan.steps if r.step not in drop]
    return plan.structure, steps


def places(graph: Graph) -> dict[int, tuple[int, float]]:
    """Each single-step node's (column, row centre), by step index."""
    return {n.steps[0]: (n.col, n.row) for n in graph.nodes if n.role != "more"}


def edges(graph: Graph) -> set[tuple[str, str]]:
    return {(e.source, e.target) for e in graph.edges}


def assert_drawable(graph: Graph) -> None:
    """No two boxes overlap, every box is inside the drawing, every edge runs left to right."""
    for a, b in itertools.combinations(graph.nodes, 2):
        apart = (a.x + NODE_W <= b.x or b.x + NODE_W <= a.x or a.y + NODE_H <= b.y or b.y + NODE_H <= a.y)
        assert apart, (a.key, b.key)
    for n in graph.nodes:
        assert PAD <= n.x <= graph.width - PAD - NODE_W + 0.01, n
        assert PAD <= n.y <= graph.height - PAD - NODE_H + 0.01, n
    for e in graph.edges:
        assert graph.node(e.target).col > graph.node(e.source).col, e
        assert e.path.startswith(f"M{graph.node(e.source).x + NODE_W:g} "), e


def test_a_chain_runs_left_to_right_on_one_row() -> None:
    structure, steps = compiled(chain(add.s(1, 1), add.s(2), add.s(3)), states={0: "completed", 1: "running"})
    graph = layout(structure, steps)
    assert places(graph) == {0: (0, 0.5), 1: (1, 0.5), 2: (2, 0.5)}
    assert edges(graph) == {("step-0", "step-1"), ("step-1", "step-2")}
    assert [(n.state, n.job_id, n.task) for n in graph.nodes] == [
        ("completed", 1000, "add"), ("running", 1001, "add"), ("waiting", 1002, "add")]
    # On one row an edge is a straight line from the right side of one box to the left of the next.
    y = PAD + NODE_H / 2
    assert graph.edges[0].path == f"M{PAD + NODE_W:g} {y:g} H{PAD + NODE_W + GAP_X:g}"
    assert (graph.cols, graph.rows, graph.hidden) == (3, 1, 0)
    assert (graph.width, graph.height) == (2 * PAD + 3 * NODE_W + 2 * GAP_X, 2 * PAD + NODE_H)
    assert_drawable(graph)


def test_a_chord_stacks_its_header_and_centres_its_callback() -> None:
    structure, steps = compiled(chord([add.s(1, 1), chain(add.s(2, 2), add.s(3)), add.s(4, 4)], total.s()))
    graph = layout(structure, steps)
    # Members stacked in member order; the chain member runs on in its own row; the callback comes
    # after the widest member, level with the middle of the group.
    assert places(graph) == {0: (0, 0.5), 1: (0, 1.5), 2: (1, 1.5), 3: (0, 2.5), 4: (2, 1.5)}
    assert edges(graph) == {("step-0", "step-4"), ("step-1", "step-2"), ("step-2", "step-4"), ("step-3", "step-4")}
    # The short members' edges run straight along their own (empty) row, then bend into the callback.
    first = next(e for e in graph.edges if e.source == "step-0")
    assert " H" in first.path and " C" in first.path
    assert_drawable(graph)


def test_a_nested_workflow_lays_out_each_part_in_its_band() -> None:
    canvas = chain(add.s(1, 1),
                   group(chain(add.s(1), chord([add.s(1), add.s(2)], total.s())), add.s(5)),
                   total.s(), add.s(1))
    structure, steps = compiled(canvas)
    graph = layout(structure, steps)
    # step 0; group member 0: chain(1, chord(header 2, 3; body 4)); member 1: 5; then 6, 7.
    assert places(graph) == {0: (0, 1.5), 1: (1, 1.0), 2: (2, 0.5), 3: (2, 1.5), 4: (3, 1.0), 5: (1, 2.5),
                             6: (4, 1.5), 7: (5, 1.5)}
    assert edges(graph) == {("step-0", "step-1"), ("step-0", "step-5"), ("step-1", "step-2"), ("step-1", "step-3"),
                            ("step-2", "step-4"), ("step-3", "step-4"), ("step-4", "step-6"), ("step-5", "step-6"),
                            ("step-6", "step-7")}
    assert (graph.cols, graph.rows) == (6, 3)
    assert_drawable(graph)


def test_a_group_of_many_members_shows_the_first_and_one_node_for_the_rest() -> None:
    states = {i: "completed" for i in range(100)} | {97: "running", 98: "discarded", 99: "available"}
    structure, steps = compiled(chord([add.s(i, i) for i in range(100)], total.s()), states=states)
    graph = layout(structure, steps, max_members=5)
    assert places(graph) == {0: (0, 0.5), 1: (0, 1.5), 2: (0, 2.5), 3: (0, 3.5), 100: (1, 2.5)}
    more = graph.node("more-4")
    assert (more.role, more.steps, more.col, more.row, more.job_id) == ("more", tuple(range(4, 100)), 0, 4.5, None)
    assert more.state == "mixed"
    assert more.counts == (("completed", 93), ("available", 1), ("discarded", 1), ("running", 1))
    # 96 member edges into the callback are one edge from the "more" node.
    assert edges(graph) == {(f"step-{i}", "step-100") for i in range(4)} | {("more-4", "step-100")}
    assert graph.hidden == 96 and graph.node_of_step(57) == more
    assert_drawable(graph)
    # The same states everywhere: the "more" node has that state.
    structure, steps = compiled(group(add.s(i, i) for i in range(10)), states=dict.fromkeys(range(10), "completed"))
    assert layout(structure, steps, max_members=3).node("more-2").state == "completed"


def test_a_long_chain_shows_its_ends_around_one_node_for_its_middle() -> None:
    structure, steps = compiled(chain(add.s(0, 0), *(add.s(i) for i in range(1, 50))))
    graph = layout(structure, steps, max_run=7)
    assert places(graph) == {0: (0, 0.5), 1: (1, 0.5), 2: (2, 0.5), 47: (4, 0.5), 48: (5, 0.5), 49: (6, 0.5)}
    assert graph.node("more-3").steps == tuple(range(3, 47)) and graph.node("more-3").col == 3
    # The edges inside the middle are gone; those into and out of it are kept once.
    assert edges(graph) == {("step-0", "step-1"), ("step-1", "step-2"), ("step-2", "more-3"), ("more-3", "step-47"),
                            ("step-47", "step-48"), ("step-48", "step-49")}
    assert graph.hidden == 44
    assert_drawable(graph)


def test_steps_outside_the_structure_and_deleted_steps() -> None:
    structure, steps = compiled(chain(add.s(1, 1), add.s(2), add.s(3)), states={0: "completed", 1: "discarded"},
                                drop=[2])
    # The link_error job a failure inserted: step 3, outside the structure.
    steps.append(Step(index=3, job_id=2000, task="long_name", state="completed"))
    graph = layout(structure, steps)
    errback = graph.node("step-3")
    assert (errback.role, errback.col, errback.row, errback.job_id) == ("errback", 0, 1.5, 2000)
    # Step 2 was deleted (jobs purge): still drawn where the structure puts it, without a job to link.
    deleted = graph.node("step-2")
    assert (deleted.state, deleted.job_id, deleted.task, deleted.col) == ("deleted", None, "add", 2)
    # Its edge from step 1 goes: the successor's job id no longer names a step.
    assert edges(graph) == {("step-0", "step-1")}
    assert (graph.cols, graph.rows) == (3, 2)
    assert graph.height == 2 * PAD + 2 * ROW_H - (ROW_H - NODE_H)
    assert_drawable(graph)


def test_a_workflow_of_one_task_and_bad_limits() -> None:
    structure, steps = compiled(add.s(1, 2))
    graph = layout(structure, steps)
    assert places(graph) == {0: (0, 0.5)} and graph.edges == ()
    with pytest.raises(ValueError, match="max_members must be at least 2"):
        layout(structure, steps, max_members=1)
    with pytest.raises(ValueError, match="unknown type 'loop'"):
        layout({"type": "loop"}, steps)


@pytest.mark.parametrize("canvas", [
    add.s(1, 2),
    chain(add.s(1, 1), add.s(2)),
    chord([add.s(1, 1), chain(add.s(2, 2), add.s(3))], total.s()),
    chain(add.s(1, 1), group(chain(add.s(1), chord([add.s(1), add.s(2)], total.s())), add.s(5)), total.s()),
    group(chain(add.s(1, 1), group(add.s(1), add.s(2))), add.s(3, 3)),
], ids=["task", "chain", "chord", "nested", "group-of-chains"])
def test_positions_are_written_as_jobs_show_writes_them(canvas: Canvas) -> None:
    structure, _ = compiled(canvas)
    assert sorted(step_paths(structure)) == list(range(len(step_paths(structure))))
