"""A workflow as a graph: each step a node, placed by a layered layout of the workflow's structure.

Chains run left to right, a group's members are stacked top to bottom, a chord is its header then
its body. A node is centred in the band of rows its part of the structure spans, so a step after a
group sits level with the middle of the group. Positions come from the structure alone (the tree
`workflows.structure` holds) and edges from each step's successors (`jobs.next_ids`), which is all
the database keeps: drawing a workflow needs none of the Python objects that built it.

Everything here is pure: `layout()` turns the structure and the steps into geometry (columns and
rows, and pixels for the inline SVG), and the template only writes it out. A workflow with
thousands of members would make an unreadable picture and a heavy page, so a group of more than
`max_members` members shows the first ones and one "more" node standing for the rest, and a chain
of more than `max_run` parts shows its first and last parts around one such node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

# Pixel geometry of the drawing (the CSS in dashboard.css styles what sits inside).
NODE_W = 176
NODE_H = 44
GAP_X = 48
GAP_Y = 14
PAD = 8
ROW_H = NODE_H + GAP_Y
COL_W = NODE_W + GAP_X

MAX_MEMBERS = 12  # members of one group drawn before the rest become one "more" node
MAX_RUN = 15  # parts of one chain drawn before its middle becomes one "more" node

Role = Literal["step", "more", "errback"]


@dataclass(frozen=True, slots=True)
class Step:
    """What the graph needs of one step: its index in the workflow, its job, and its successors'
    job ids (the steps it counts down, `jobs.next_ids`)."""

    index: int
    job_id: int
    task: str
    state: str
    next_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Node:
    """One box of the drawing. `col` and `row` place it in the layout (`row` is its centre, in rows
    from the top); `x` and `y` are its top-left corner in pixels. A "more" node stands for `steps`
    (several), with `counts` of their states; its `state` is theirs when they all share one, else
    "mixed". A step missing from the database (deleted by `jobs purge`) has the state "deleted"."""

    key: str
    role: Role
    steps: tuple[int, ...]
    task: str
    state: str
    job_id: int | None
    col: int
    row: float
    x: float
    y: float
    counts: tuple[tuple[str, int], ...] = ()

    @property
    def transform(self) -> str:
        """The SVG transform that puts the node's box in place."""
        return f"translate({_px(self.x)} {_px(self.y)})"


@dataclass(frozen=True, slots=True)
class Edge:
    """From one node to another, with the SVG path that draws it (right side to left side)."""

    source: str
    target: str
    path: str


@dataclass(frozen=True, slots=True)
class Graph:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    cols: int
    rows: int
    width: int
    height: int
    hidden: int = 0  # steps drawn only as part of a "more" node
    node_width = NODE_W  # for the template: every node is this big
    node_height = NODE_H

    def node(self, key: str) -> Node:
        return next(n for n in self.nodes if n.key == key)

    def node_of_step(self, index: int) -> Node | None:
        return next((n for n in self.nodes if index in n.steps), None)


# -- the layout, in columns and rows -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Item:
    role: Role
    steps: tuple[int, ...]
    task: str


@dataclass(slots=True)
class _Block:
    """A part of the structure laid out alone: `width` columns, `height` rows, and its items at
    (column, row centre) relative to its own top-left corner."""

    width: int
    height: int
    items: list[tuple[int, float, _Item]] = field(default_factory=list)


def _steps_in(node: Mapping[str, Any]) -> list[int]:
    kind = node.get("type")
    if kind == "task":
        return [int(node["step"])]
    if kind == "chord":
        return _steps_in(node["header"]) + _steps_in(node["body"])
    return [s for child in node.get("children", []) for s in _steps_in(child)]


def _more(children: Iterable[Mapping[str, Any]]) -> _Block | None:
    steps = tuple(s for child in children for s in _steps_in(child))
    return _Block(1, 1, [(0, 0.5, _Item("more", steps, ""))]) if steps else None


def _sequence(blocks: Iterable[_Block | None]) -> _Block:
    """Side by side, each centred in the tallest one's band: a chain, or a chord's header and body."""
    parts = [b for b in blocks if b is not None]
    height = max((b.height for b in parts), default=0)
    out = _Block(sum(b.width for b in parts), height)
    col = 0
    for b in parts:
        offset = (height - b.height) / 2
        out.items.extend((col + c, offset + r, item) for c, r, item in b.items)
        col += b.width
    return out


def _stack(blocks: Iterable[_Block | None]) -> _Block:
    """One above the other, left-aligned so that the step after a group starts one column after its
    widest member; a shorter member's band stays empty to its right, where its edge runs."""
    parts = [b for b in blocks if b is not None]
    out = _Block(max((b.width for b in parts), default=0), sum(b.height for b in parts))
    row = 0
    for b in parts:
        out.items.extend((c, row + r, item) for c, r, item in b.items)
        row += b.height
    return out


def _place(node: Mapping[str, Any], max_members: int, max_run: int) -> _Block:
    kind = node.get("type")
    if kind == "task":
        return _Block(1, 1, [(0, 0.5, _Item("step", (int(node["step"]),), str(node.get("task", ""))))])
    if kind == "chord":
        return _sequence([_place(node["header"], max_members, max_run), _place(node["body"], max_members, max_run)])
    children: list[Mapping[str, Any]] = list(node.get("children", []))
    if kind == "group":
        if len(children) > max_members:
            shown = [_place(c, max_members, max_run) for c in children[:max_members - 1]]
            return _stack([*shown, _more(children[max_members - 1:])])
        return _stack(_place(c, max_members, max_run) for c in children)
    if kind == "chain":
        if len(children) > max_run:
            head, tail = max_run // 2, max_run - max_run // 2 - 1
            return _sequence([*(_place(c, max_members, max_run) for c in children[:head]),
                              _more(children[head:len(children) - tail]),
                              *(_place(c, max_members, max_run) for c in children[len(children) - tail:])])
        return _sequence(_place(c, max_members, max_run) for c in children)
    raise ValueError(f"a workflow structure node of unknown type {kind!r}")


# -- from the layout to the drawing -------------------------------------------------------------------

def _px(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def edge_path(source: Node, target: Node) -> str:
    """Straight along the source's row to the gap before the target's column, then an S-curve into
    the target: the run stays in the source's band, which is empty to the right of a group member
    shorter than the group's widest."""
    x1, y1 = source.x + NODE_W, source.y + NODE_H / 2
    x2, y2 = target.x, target.y + NODE_H / 2
    bend = max(x1, x2 - GAP_X)
    if y1 == y2:
        return f"M{_px(x1)} {_px(y1)} H{_px(x2)}"
    middle = (bend + x2) / 2
    run = f" H{_px(bend)}" if bend > x1 else ""
    return (f"M{_px(x1)} {_px(y1)}{run} C{_px(middle)} {_px(y1)} {_px(middle)} {_px(y2)} "
            f"{_px(x2)} {_px(y2)}")


def layout(structure: Mapping[str, Any], steps: Sequence[Step], *, max_members: int = MAX_MEMBERS,
           max_run: int = MAX_RUN) -> Graph:
    """The workflow as nodes and edges. Steps that the structure does not name (the link_error job,
    inserted when the workflow failed) are placed in a row of their own below it, without edges."""
    if max_members < 2 or max_run < 3:
        raise ValueError("max_members must be at least 2 and max_run at least 3: a collapsed part needs "
                         "something shown beside its 'more' node")
    block = _place(structure, max_members, max_run)
    by_index = {s.index: s for s in steps}
    named = set(_steps_in(structure))
    extras = sorted(i for i in by_index if i not in named)
    rows = block.height
    placed = list(block.items)
    if extras:
        placed.extend((col, rows + 0.5, _Item("errback", (i,), by_index[i].task)) for col, i in enumerate(extras))
        rows += 1
    cols = max(block.width, len(extras))

    nodes: list[Node] = []
    node_of: dict[int, str] = {}
    hidden = 0
    for col, row, item in sorted(placed, key=lambda p: (p[0], p[1])):
        x, y = PAD + col * COL_W, PAD + (row - 0.5) * ROW_H
        if item.role == "more":
            counts = Counter(by_index[i].state if i in by_index else "deleted" for i in item.steps)
            state = next(iter(counts)) if len(counts) == 1 else "mixed"
            key = f"more-{item.steps[0]}"
            nodes.append(Node(key, "more", item.steps, "", state, None, col, row, x, y,
                              tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))))
            hidden += len(item.steps)
        else:
            index = item.steps[0]
            step = by_index.get(index)
            key = f"step-{index}"
            nodes.append(Node(key, item.role, item.steps, step.task if step else item.task,
                              step.state if step else "deleted", step.job_id if step else None, col, row, x, y))
        for i in item.steps:
            node_of[i] = key

    index_of_job = {s.job_id: s.index for s in steps}
    keyed = {n.key: n for n in nodes}
    pairs: dict[tuple[str, str], None] = {}  # a dict keeps the first-seen order and drops repeats
    for step in sorted(steps, key=lambda s: s.index):
        for job_id in step.next_ids:
            target = index_of_job.get(job_id)
            if target is None or step.index not in node_of or target not in node_of:
                continue  # a successor deleted since, or a step outside the structure
            pair = (node_of[step.index], node_of[target])
            if pair[0] != pair[1]:  # both inside one "more" node
                pairs[pair] = None
    edges = tuple(Edge(a, b, edge_path(keyed[a], keyed[b])) for a, b in pairs)
    width = 2 * PAD + cols * COL_W - GAP_X if cols else 2 * PAD
    height = 2 * PAD + rows * ROW_H - GAP_Y if rows else 2 * PAD
    return Graph(tuple(nodes), edges, cols, rows, width, height, hidden)
