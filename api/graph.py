"""Renderings of a task's execution graph: JSON, Mermaid text and an SVG picture.

Pure functions over the plain task dict that `domain.views.task_view` produces; no
HTTP here. The graph's nodes are the task's jobs, its edges go from a need to the job
that needs it. System jobs (and every edge touching one) are left out unless the
caller asks for them (`include_system`, for auditor and support readers).

The SVG is laid out with grandalf's Sugiyama (layered) layout, turned to run left to
right: a job's column is its dependency depth. The output depends only on the input:
the same task always renders to the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from grandalf.graphs import Edge, Vertex, graph_core
from grandalf.layouts import SugiyamaLayout

__all__ = ["STATUS_STYLES", "graph_json", "graph_mermaid", "graph_svg", "mermaid_id"]


# -- palette ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusStyle:
    label: str  # the display label
    fill: str  # the box's background (a light tint)
    stroke: str  # the box's border and status dot (the strong colour)
    text: str  # the box's text colour, readable on `fill`


# Shared by the SVG and the Mermaid classDefs, in the domain's status order.
STATUS_STYLES: dict[str, StatusStyle] = {
    "pending": StatusStyle("pending", "#f3f4f6", "#9ca3af", "#374151"),
    "queued": StatusStyle("queued", "#e0f2fe", "#38bdf8", "#075985"),
    "in_progress": StatusStyle("in progress", "#dbeafe", "#2563eb", "#1e3a8a"),
    "backed_off": StatusStyle("backed off", "#fef3c7", "#d97706", "#78350f"),
    "canceling": StatusStyle("canceling", "#ffedd5", "#ea580c", "#7c2d12"),
    "done": StatusStyle("done", "#dcfce7", "#16a34a", "#14532d"),
    "done_with_warnings": StatusStyle("done with warnings", "#ecfccb", "#65a30d", "#365314"),
    "failed": StatusStyle("failed", "#fee2e2", "#dc2626", "#7f1d1d"),
    "timed_out": StatusStyle("timed out", "#f3e8ff", "#7e22ce", "#4c1d95"),
    "canceled": StatusStyle("canceled", "#e5e7eb", "#4b5563", "#1f2937"),
}


def _style(status: str) -> StatusStyle:
    known = STATUS_STYLES.get(status)
    if known is not None:
        return known
    base = STATUS_STYLES["pending"]
    return StatusStyle(str(status).replace("_", " "), base.fill, base.stroke, base.text)


# -- the graph itself ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    key: str
    name: str
    status: str
    system: bool


def _graph(task: dict[str, Any], include_system: bool) -> tuple[list[_Node], list[tuple[str, str]]]:
    """The visible jobs in plan order, and the edges (need, dependant) between them."""
    nodes: list[_Node] = []
    seen: set[str] = set()
    for job in task.get("jobs") or ():
        system = bool(job.get("system", False))
        key = str(job["key"])
        if (system and not include_system) or key in seen:
            continue
        seen.add(key)
        nodes.append(_Node(key, str(job.get("name", key)), str(job.get("status", "")), system))
    edges: list[tuple[str, str]] = []
    seen_edges: set[tuple[str, str]] = set()
    for job in task.get("jobs") or ():
        key = str(job["key"])
        if key not in seen:
            continue
        for need in job.get("needs") or ():
            edge = (str(need), key)
            if edge[0] in seen and edge[0] != key and edge not in seen_edges:
                seen_edges.add(edge)
                edges.append(edge)
    return nodes, edges


def graph_json(task: dict[str, Any], include_system: bool) -> dict[str, Any]:
    """`{"nodes": [{"key", "name", "status", "system"}], "edges": [{"from", "to"}]}`."""
    nodes, edges = _graph(task, include_system)
    return {
        "nodes": [
            {"key": n.key, "name": n.name, "status": n.status, "system": n.system} for n in nodes
        ],
        "edges": [{"from": a, "to": b} for a, b in edges],
    }


# -- Mermaid ------------------------------------------------------------------------------

_MERMAID_SAFE = re.compile(r"[a-z0-9]")


def mermaid_id(key: str) -> str:
    """A Mermaid node id for a job key: `j_` + the key, every character outside
    [a-z0-9] written as `_<hex>_` (so `build-image` → `j_build_2d_image`). The mapping
    is one-to-one, and never yields a Mermaid keyword such as `end`."""
    return "j_" + "".join(c if _MERMAID_SAFE.fullmatch(c) else f"_{ord(c):x}_" for c in key)


def _mermaid_text(text: str) -> str:
    """Text for a double-quoted Mermaid label, with Mermaid's `#code;` entities for
    every character that could end the label or be read as markup."""
    out = []
    for c in text:
        if c in '"#&<>`':
            out.append(f"#{ord(c)};")
        elif c in "\r\n\t" or ord(c) < 0x20:
            out.append(" ")
        else:
            out.append(c)
    return "".join(out)


def graph_mermaid(task: dict[str, Any], include_system: bool) -> str:
    """A Mermaid `flowchart LR`: one node per job labelled with its name and status,
    an edge need --> dependant, and a class per status in the SVG's palette."""
    nodes, edges = _graph(task, include_system)
    lines = ["flowchart LR"]
    for n in nodes:
        label = f"{_mermaid_text(n.name)}<br/>{_mermaid_text(_style(n.status).label)}"
        if n.system:
            label += "<br/><i>system</i>"
        lines.append(f'    {mermaid_id(n.key)}["{label}"]')
    for a, b in edges:
        lines.append(f"    {mermaid_id(a)} --> {mermaid_id(b)}")
    for status, s in STATUS_STYLES.items():
        lines.append(f"    classDef st_{status} fill:{s.fill},stroke:{s.stroke},color:{s.text}")
    lines.append(
        "    classDef st_other fill:{0.fill},stroke:{0.stroke},color:{0.text}".format(
            STATUS_STYLES["pending"]
        )
    )
    by_class: dict[str, list[str]] = {}
    for n in nodes:
        cls = f"st_{n.status}" if n.status in STATUS_STYLES else "st_other"
        by_class.setdefault(cls, []).append(mermaid_id(n.key))
    for cls, ids in by_class.items():
        lines.append(f"    class {','.join(ids)} {cls}")
    return "\n".join(lines) + "\n"


# -- layout -------------------------------------------------------------------------------

BOX_H = 54.0
_MIN_BOX_W = 170.0
_MAX_BOX_W = 260.0
_COL_GAP = 84.0  # horizontal room between columns, for the edges
_ROW_GAP = 22.0  # vertical room between boxes of a column
_LANE = 12.0  # vertical room a long edge takes where it passes a column
_MAX_BENDS = 2000  # bend points of long edges the layout may route (see _routed_edges)
_MAX_BENDS_PER_COLUMN = 250


class _View:
    """What grandalf needs of a vertex: a size, and where it puts it (`xy`)."""

    __slots__ = ("h", "w", "xy")

    def __init__(self, w: float, h: float) -> None:
        self.w, self.h = w, h
        self.xy: tuple[float, float] = (0.0, 0.0)


class _EdgeView:
    __slots__ = ("path",)

    def __init__(self) -> None:
        self.path: list[tuple[float, float]] = []

    def setpath(self, path: list[tuple[float, float]]) -> None:
        self.path = list(path)


@dataclass
class _Layout:
    width: float
    height: float
    boxes: dict[str, tuple[float, float]]  # key -> top-left corner
    box_w: float
    # (need, dependant) -> the points an edge passes through, from need to dependant
    routes: dict[tuple[str, str], list[tuple[float, float]]]


def _ranks(keys: Sequence[str], edges: Sequence[tuple[str, str]]) -> tuple[dict[str, int], bool]:
    """Longest-path depth of every job (0 for jobs without needs), and whether the
    graph is acyclic. Jobs on a cycle (never in a valid plan) keep the depth they reached."""
    rank = dict.fromkeys(keys, 0)
    indeg = dict.fromkeys(keys, 0)
    out: dict[str, list[str]] = {k: [] for k in keys}
    for a, b in edges:
        out[a].append(b)
        indeg[b] += 1
    ready = [k for k in keys if indeg[k] == 0]
    while ready:
        nxt = []
        for k in ready:
            for d in out[k]:
                rank[d] = max(rank[d], rank[k] + 1)
                indeg[d] -= 1
                if indeg[d] == 0:
                    nxt.append(d)
        ready = nxt
    return rank, all(d == 0 for d in indeg.values())


def _transitive_reduction(
    keys: Sequence[str], edges: Sequence[tuple[str, str]], rank: dict[str, int]
) -> list[tuple[str, str]]:
    """The edges not implied by others (a -> b is implied when b is reachable from
    another of a's dependants), with reachability as bitsets. Edges that do not go
    forward in `rank` (only on a cycle) are kept."""
    index = {k: i for i, k in enumerate(keys)}
    out: dict[str, list[str]] = {k: [] for k in keys}
    for a, b in edges:
        out[a].append(b)
    below: dict[str, int] = {}  # everything reachable from a job, itself excluded
    for k in sorted(keys, key=lambda k: -rank[k]):
        mask = 0
        for d in out[k]:
            if rank[d] > rank[k]:
                mask |= below.get(d, 0) | (1 << index[d])
        below[k] = mask
    # b is reachable through another dependant c of a iff it is below any of them,
    # since b is never below itself.
    via = {a: 0 for a in keys}
    for k in keys:
        for c in out[k]:
            if rank[c] > rank[k]:
                via[k] |= below[c]
    return [(a, b) for a, b in edges if rank[b] <= rank[a] or not (via[a] >> index[b]) & 1]


def _routed_edges(
    keys: Sequence[str], edges: Sequence[tuple[str, str]], rank: dict[str, int]
) -> list[tuple[str, str]]:
    """The edges the layout routes. An edge spanning several columns needs a bend point
    in each column it passes; with very dense needs that is slow and, in grandalf's
    recursive placement, deep. So past a budget, the layout keeps the transitive
    reduction, and then only the long edges that still fit (shortest first); the rest
    are drawn as direct curves. Leaving long edges out never changes the columns."""

    def bends(e: tuple[str, str]) -> range:
        return range(rank[e[0]] + 1, rank[e[1]])

    def fits(candidates: Sequence[tuple[str, str]]) -> bool:
        per_column: dict[int, int] = {}
        for e in candidates:
            for r in bends(e):
                per_column[r] = per_column.get(r, 0) + 1
        return (
            sum(per_column.values()) <= _MAX_BENDS
            and max(per_column.values(), default=0) <= _MAX_BENDS_PER_COLUMN
        )

    if fits(edges):
        return list(edges)
    reduced = _transitive_reduction(keys, edges, rank)
    if fits(reduced):
        return reduced
    kept: set[tuple[str, str]] = set()
    total, per_column = 0, dict.fromkeys(range(max(rank.values()) + 1), 0)
    for e in sorted(reduced, key=lambda e: len(bends(e))):
        columns = bends(e)
        if total + len(columns) <= _MAX_BENDS and all(
            per_column[r] < _MAX_BENDS_PER_COLUMN for r in columns
        ):
            kept.add(e)
            total += len(columns)
            for r in columns:
                per_column[r] += 1
    return [e for e in reduced if e in kept]


def _layout(keys: Sequence[str], edges: Sequence[tuple[str, str]], box_w: float) -> _Layout:
    if not keys:
        return _Layout(0.0, 0.0, {}, box_w, {})
    rank, acyclic = _ranks(keys, edges)
    layout_edges = _routed_edges(keys, edges, rank)

    # grandalf stacks layers top to bottom; we want them left to right, so every
    # size goes in transposed (w is the extent along a column) and comes out swapped.
    vertices = {k: Vertex(k) for k in keys}
    for v in vertices.values():
        v.view = _View(BOX_H, box_w)
    root = Vertex(None)  # ties every job without needs (and every component) together
    root.view = _View(1.0, 1.0)
    g_edges = []
    for a, b in layout_edges:
        e = Edge(vertices[a], vertices[b])
        e.view = _EdgeView()
        g_edges.append((a, b, e))
    has_need = {b for _, b, _ in g_edges}
    neighbours: dict[str, list[str]] = {k: [] for k in keys}
    for a, b, _ in g_edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    reached: set[str] = set()
    root_edges = []

    def tie(k: str) -> None:
        root_edges.append(Edge(root, vertices[k]))
        stack = [k]
        reached.add(k)
        while stack:
            for n in neighbours[stack.pop()]:
                if n not in reached:
                    reached.add(n)
                    stack.append(n)

    for k in keys:
        if k not in has_need:
            tie(k)
    for k in keys:  # a component with no job free of needs: only a cycle does that
        if k not in reached:
            tie(k)

    core = graph_core([root, *vertices.values()], [*root_edges, *(e for _, _, e in g_edges)])
    sug = SugiyamaLayout(core)
    sug.xspace = _ROW_GAP
    sug.yspace = _COL_GAP
    sug.dw, sug.dh = _LANE, box_w  # the size of the bend points of long edges
    # A valid plan is a DAG: then grandalf need not search for edges to reverse (a
    # recursive search that also raises the interpreter's recursion limit on big graphs).
    sug.init_all(roots=[root], inverted_edges=[] if acyclic else None)
    sug.draw()

    # Safety net: keep every column's boxes and lanes apart, whatever the placement did.
    for layer in sug.layers:
        prev_edge = None
        for v in sorted(layer, key=lambda v: (v.view.xy[0], sug.grx[v].pos)):
            x, y = v.view.xy
            half = v.view.w / 2.0
            if prev_edge is not None and x - half < prev_edge + _ROW_GAP / 2:
                x = prev_edge + _ROW_GAP / 2 + half
                v.view.xy = (x, y)
            prev_edge = x + half
    sug.draw_edges()

    # Transpose (grandalf x runs along a column, y across columns), drop the root's
    # column and shift everything to the origin.
    def point(xy: tuple[float, float]) -> tuple[float, float]:
        return (xy[1], xy[0])

    centres = {k: point(v.view.xy) for k, v in vertices.items()}
    min_x = min(c[0] for c in centres.values()) - box_w / 2
    min_y = min(c[1] for c in centres.values()) - BOX_H / 2
    for layer in sug.layers[1:]:
        for v in layer:
            min_y = min(min_y, v.view.xy[0] - v.view.w / 2)

    def shift(p: tuple[float, float]) -> tuple[float, float]:
        return (p[0] - min_x, p[1] - min_y)

    boxes = {k: shift((c[0] - box_w / 2, c[1] - BOX_H / 2)) for k, c in centres.items()}
    routes: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for a, b, e in g_edges:
        path = [shift(point(p)) for p in e.view.path] if e.view.path else []
        if not path or len(path) < 2:
            path = [shift(centres[a]), shift(centres[b])]
        routes[(a, b)] = path
    for a, b in edges:  # edges left out of a very dense layout: direct curves
        routes.setdefault((a, b), [shift(centres[a]), shift(centres[b])])
    width = max(x for x, _ in boxes.values()) + box_w
    height = max(y for _, y in boxes.values()) + BOX_H
    for path in routes.values():
        height = max(height, *(y for _, y in path))
    return _Layout(width, height, boxes, box_w, routes)


# -- SVG ----------------------------------------------------------------------------------

_FONT = "Inter, 'Segoe UI', Helvetica, Arial, sans-serif"
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NARROW = set("ijlft.,:;'!|()[] ")
_WIDE = set("mwMW@%")


def _xml(text: str) -> str:
    """Text safe inside an XML element or a double-quoted attribute."""
    text = _XML_INVALID.sub("\ufffd", text)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def _text_width(text: str, size: float, bold: bool = False) -> float:
    """A rough rendered width (no font metrics at hand), erring on the wide side."""
    em = 0.0
    for c in text:
        if c in _NARROW:
            em += 0.36
        elif c in _WIDE:
            em += 0.92
        elif c.isupper() or c.isdigit():
            em += 0.72
        elif ord(c) > 0x2E7F:  # CJK and the like: full width
            em += 1.0
        else:
            em += 0.62
    return em * size * (1.1 if bold else 1.0)


def _fit(text: str, size: float, width: float, bold: bool = False) -> str:
    if _text_width(text, size, bold) <= width:
        return text
    while text and _text_width(text + "…", size, bold) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _num(v: float) -> str:
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _edge_path(points: list[tuple[float, float]], box_w: float) -> str:
    """A smooth path through an edge's points: out of the need's right side, across
    each column it skips (level, in its lane), into the dependant's left side."""
    half = box_w / 2
    (sx, sy), (tx, ty) = points[0], points[-1]
    # Every point becomes a horizontal run across its column; curves join the runs.
    runs = [(sx + half, sx + half, sy)]
    runs += [(x - half, x + half, y) for x, y in points[1:-1]]
    runs.append((tx - half, tx - half, ty))
    d = [f"M{_num(runs[0][1])},{_num(runs[0][2])}"]
    for (_, x0, y0), (x1, x2, y1) in pairwise(runs):
        if abs(y1 - y0) < 0.5:
            d.append(f"L{_num(x1)},{_num(y1)}")
        else:
            mid = (x1 - x0) / 2
            d.append(
                f"C{_num(x0 + mid)},{_num(y0)} {_num(x1 - mid)},{_num(y1)} {_num(x1)},{_num(y1)}"
            )
        if x2 > x1:
            d.append(f"L{_num(x2)},{_num(y1)}")
    return " ".join(d)


def _spread_ports(
    layout: _Layout, edges: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """Edges leave and enter a box at points spread along its side, ordered by where
    the other end lies, instead of all meeting in the middle."""
    routes = {e: list(layout.routes[e]) for e in edges}
    outgoing: dict[str, list[tuple[str, str]]] = {}
    incoming: dict[str, list[tuple[str, str]]] = {}
    for a, b in routes:
        outgoing.setdefault(a, []).append((a, b))
        incoming.setdefault(b, []).append((a, b))

    def spread(items: list[tuple[str, str]], end: int, neighbour: int) -> None:
        n = len(items)
        if n < 2:
            return
        items.sort(key=lambda e: (routes[e][neighbour][1], e))
        step = min(10.0, (BOX_H - 18) / (n - 1))
        for i, e in enumerate(items):
            x, y = routes[e][end]
            routes[e][end] = (x, y + (i - (n - 1) / 2) * step)

    for items in outgoing.values():
        spread(items, 0, 1)
    for items in incoming.values():
        spread(items, -1, -2)
    return routes


def graph_svg(task: dict[str, Any], include_system: bool) -> str:
    """An SVG picture of the graph: a rounded box per job, coloured by status and
    showing its name and status label, arrows from needs to dependants, columns by
    dependency depth, and a legend of the statuses shown."""
    nodes, edges = _graph(task, include_system)
    margin, header_h = 24.0, 44.0
    title = str(task.get("title") or task.get("id") or "Task")

    name_w = max((_text_width(n.name, 13, bold=True) for n in nodes), default=0.0)
    box_w = min(_MAX_BOX_W, max(_MIN_BOX_W, name_w + 40))
    layout = _layout([n.key for n in nodes], edges, box_w)

    # Legend: the statuses present, in the domain's order, then the system marker.
    statuses = list(dict.fromkeys(n.status for n in nodes))
    order = list(STATUS_STYLES)
    statuses.sort(key=lambda s: (order.index(s) if s in order else len(order), s))
    legend: list[tuple[str, str]] = [(s, _style(s).label) for s in statuses]
    if any(n.system for n in nodes):
        legend.append(("system", "system job"))
    legend_w = sum(_text_width(label, 12) + 34 for _, label in legend)

    title_text = _fit(title, 16, 900, bold=True)
    content_w = max(layout.width, legend_w, _text_width(title_text, 16, bold=True), 240.0)
    width = content_w + 2 * margin
    graph_top = margin + header_h
    graph_h = layout.height if nodes else 40.0
    height = graph_top + graph_h + 24 + 28 + margin

    out: list[str] = []
    w = out.append
    w(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(width)}" '
        f'height="{_num(height)}" viewBox="0 0 {_num(width)} {_num(height)}" '
        f'role="img" font-family="{_xml(_FONT)}">'
    )
    w(f"<title>{_xml(title)}</title>")
    w(
        "<defs>"
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" markerUnits="userSpaceOnUse" orient="auto">'
        '<path d="M0,1 L9,5 L0,9 z" fill="#64748b"/></marker>'
        "</defs>"
    )
    w(f'<rect width="{_num(width)}" height="{_num(height)}" fill="#ffffff"/>')
    w(
        f'<text x="{_num(margin)}" y="{_num(margin + 16)}" font-size="16" font-weight="600" '
        f'fill="#111827">{_xml(title_text)}</text>'
    )
    summary = f"{len(nodes)} job{'s' if len(nodes) != 1 else ''}"
    if include_system:
        summary += ", system jobs shown"
    w(
        f'<text x="{_num(margin)}" y="{_num(margin + 34)}" font-size="12" '
        f'fill="#6b7280">{_xml(summary)}</text>'
    )

    if not nodes:
        w(
            f'<text x="{_num(margin)}" y="{_num(graph_top + 24)}" font-size="13" '
            f'fill="#6b7280">No jobs to show</text>'
        )

    ox, oy = margin, graph_top
    w(
        f'<g id="edges" fill="none" stroke="#94a3b8" stroke-width="1.5" '
        f'transform="translate({_num(ox)},{_num(oy)})">'
    )
    for (a, b), points in _spread_ports(layout, edges).items():
        w(
            f'<path class="edge" data-from="{_xml(a)}" data-to="{_xml(b)}" '
            f'd="{_edge_path(points, box_w)}" marker-end="url(#arrow)"/>'
        )
    w("</g>")

    w(f'<g id="jobs" transform="translate({_num(ox)},{_num(oy)})">')
    for n in nodes:
        s = _style(n.status)
        x, y = layout.boxes[n.key]
        name_room = box_w - 24 - (56 if n.system else 0)
        w(f'<g class="job status-{_xml(n.status)}" data-key="{_xml(n.key)}">')
        tip = f"{n.name} — {s.label}" + (" (system job)" if n.system else "")
        w(f"<title>{_xml(tip)}</title>")
        dash = ' stroke-dasharray="5 3"' if n.system else ""
        w(
            f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(box_w)}" height="{_num(BOX_H)}" '
            f'rx="8" ry="8" fill="{s.fill}" stroke="{s.stroke}" stroke-width="1.5"{dash}/>'
        )
        w(
            f'<rect x="{_num(x)}" y="{_num(y + 8)}" width="4" height="{_num(BOX_H - 16)}" '
            f'rx="2" fill="{s.stroke}"/>'
        )
        w(
            f'<text x="{_num(x + 14)}" y="{_num(y + 22)}" font-size="13" font-weight="600" '
            f'fill="#111827">{_xml(_fit(n.name, 13, name_room, bold=True))}</text>'
        )
        w(f'<circle cx="{_num(x + 18)}" cy="{_num(y + 38)}" r="4" fill="{s.stroke}"/>')
        w(
            f'<text x="{_num(x + 27)}" y="{_num(y + 42)}" font-size="12" '
            f'fill="{s.text}">{_xml(s.label)}</text>'
        )
        if n.system:
            bx = x + box_w - 58
            w(
                f'<rect x="{_num(bx)}" y="{_num(y + 8)}" width="50" height="16" rx="8" '
                f'fill="#ffffff" stroke="#6b7280" stroke-width="1"/>'
                f'<text x="{_num(bx + 25)}" y="{_num(y + 19.5)}" font-size="9.5" '
                f'text-anchor="middle" letter-spacing="0.5" fill="#374151">SYSTEM</text>'
            )
        w("</g>")
    w("</g>")

    if legend:
        ly = graph_top + graph_h + 24
        w(f'<g id="legend" transform="translate({_num(margin)},{_num(ly)})" font-size="12">')
        lx = 0.0
        for status, label in legend:
            if status == "system":
                w(
                    f'<rect x="{_num(lx)}" y="2" width="18" height="12" rx="3" fill="#ffffff" '
                    f'stroke="#6b7280" stroke-dasharray="3 2"/>'
                )
            else:
                s = _style(status)
                w(
                    f'<rect x="{_num(lx)}" y="2" width="18" height="12" rx="3" '
                    f'fill="{s.fill}" stroke="{s.stroke}" stroke-width="1.5"/>'
                )
            w(f'<text x="{_num(lx + 24)}" y="12" fill="#374151">{_xml(label)}</text>')
            lx += _text_width(label, 12) + 34
        w("</g>")
    w("</svg>")
    return "\n".join(out) + "\n"
