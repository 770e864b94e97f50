"""The lineage graph of a model as a picture: data, tokenizers and labels on the left, then jobs, then models, left
to right in the order they were made (web.services.lineage gives the graph; this module lays it out and draws it).

The layout is layered (Sugiyama's): each node's column is the length of the longest path reaching it (a source's,
the column before its first use); an edge that
spans several columns passes through a slot reserved for it in each column between (a "dummy" node), so no edge
crosses a box; the order within a column follows the neighbours' (barycentres, swept both ways) so that edges
cross each other little. Boxes are sized for their wrapped labels, in inches, so the text is drawn at a size people
read and never spills out of its box (tests/web/test_lineage.py checks both on drawn figures).
"""

from __future__ import annotations

import html
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field

NODE_COLOURS = {"dataset": "#0ea5e9", "tokenizer": "#0d9488", "labels": "#16a34a", "arena": "#d97706",
                "job": "#64748b", "model": "#6366f1"}
DELETED_COLOUR = "#e2e8f0"  # a deleted dataset: pale, its text dark, its border dashed

# Sizes in inches (the figure's units): a box holds WRAP_CHARS characters a line at FONT_SIZE points.
FONT_SIZE = 10
WRAP_CHARS = 20
BOX_WIDTH = 1.75
LINE_HEIGHT = 0.2
BOX_PADDING = 0.22
COLUMN_GAP = 0.55
ROW_GAP = 0.28
EDGE_SLOT = 0.12      # the height an edge's passage takes in a column it crosses
MARGIN = 0.15
ORDER_SWEEPS = 4


def layers(graph: dict) -> dict[str, int]:
    """Each node's column: the length of the longest path reaching it; a source (data, a tokenizer, labels) sits
    just before the first column that uses it, so its arrows stay short."""
    incoming: dict[str, list[str]] = defaultdict(list)
    for edge in graph["edges"]:
        incoming[edge["to"]].append(edge["from"])
    depth: dict[str, int] = {}

    def visit(node: str, seen: frozenset = frozenset()) -> int:
        if node in depth:
            return depth[node]
        if node in seen:  # a cycle cannot happen in lineage; do not loop if data says otherwise
            return 0
        depth[node] = max((visit(parent, seen | {node}) + 1 for parent in incoming[node]), default=0)
        return depth[node]

    for node in graph["nodes"]:
        visit(node["id"])
    outgoing: dict[str, list[str]] = defaultdict(list)
    for edge in graph["edges"]:
        outgoing[edge["from"]].append(edge["to"])
    for node in graph["nodes"]:
        if not incoming[node["id"]] and outgoing[node["id"]]:
            depth[node["id"]] = min(depth[child] for child in outgoing[node["id"]]) - 1
    return depth


@dataclass
class Layout:
    """Where everything goes, in inches from the top left: boxes by node id as (centre x, centre y, width,
    height), each edge's polyline from its source box's right side to its target box's left side."""

    width: float
    height: float
    boxes: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    lines: dict[str, list[str]] = field(default_factory=dict)  # each node's label, wrapped
    edges: list[tuple[str, str, list[tuple[float, float]]]] = field(default_factory=list)


def _ordered_columns(graph: dict, depth: dict[str, int]) -> tuple[list[list[str]], dict[tuple, list[str]]]:
    """(the columns, each a list of node ids and dummies top to bottom; each edge's dummies in column order)."""
    columns: dict[int, list[str]] = defaultdict(list)
    for node in graph["nodes"]:
        columns[depth[node["id"]]].append(node["id"])
    neighbours: dict[str, set[str]] = defaultdict(set)
    passages: dict[tuple, list[str]] = {}
    for index, edge in enumerate(graph["edges"]):
        chain = [edge["from"]]
        for column in range(depth[edge["from"]] + 1, depth[edge["to"]]):
            dummy = f"\0edge{index}:{column}"
            columns[column].append(dummy)
            chain.append(dummy)
        chain.append(edge["to"])
        passages[(edge["from"], edge["to"], index)] = chain[1:-1]
        for a, b in zip(chain, chain[1:]):
            neighbours[a].add(b)
            neighbours[b].add(a)
    order = [columns[column] for column in range(max(columns) + 1)] if columns else []
    for sweep in range(ORDER_SWEEPS):  # barycentres: down the columns, then back up
        indices = range(1, len(order)) if sweep % 2 == 0 else range(len(order) - 2, -1, -1)
        for column in indices:
            beside = order[column - 1] if sweep % 2 == 0 else order[column + 1]
            place = {node: position for position, node in enumerate(beside)}

            def barycentre(node: str, current: int) -> float:
                near = [place[other] for other in neighbours[node] if other in place]
                return sum(near) / len(near) if near else current

            order[column] = [node for _, node in sorted(
                ((barycentre(node, position), node) for position, node in enumerate(order[column])),
                key=lambda item: item[0])]
    return order, passages


def layout(graph: dict) -> Layout:
    """The layered layout of `graph` (see the module's docstring)."""
    if not graph["nodes"]:
        return Layout(width=4.0, height=1.0)
    depth = layers(graph)
    order, passages = _ordered_columns(graph, depth)
    labels = {node["id"]: node["label"] for node in graph["nodes"]}
    lines = {node: textwrap.wrap(label, WRAP_CHARS, break_long_words=True) or [""] for node, label in labels.items()}

    def height(node: str) -> float:
        return len(lines[node]) * LINE_HEIGHT + BOX_PADDING if node in labels else EDGE_SLOT

    column_heights = [sum(height(node) for node in column) + ROW_GAP * (len(column) - 1) for column in order]
    total_height = max(column_heights) + 2 * MARGIN
    result = Layout(width=len(order) * BOX_WIDTH + (len(order) - 1) * COLUMN_GAP + 2 * MARGIN, height=total_height)
    centres: dict[str, tuple[float, float]] = {}
    for index, column in enumerate(order):
        x = MARGIN + index * (BOX_WIDTH + COLUMN_GAP) + BOX_WIDTH / 2
        y = (total_height - column_heights[index]) / 2  # each column centred
        for node in column:
            centres[node] = (x, y + height(node) / 2)
            if node in labels:
                result.boxes[node] = (x, y + height(node) / 2, BOX_WIDTH, height(node))
            y += height(node) + ROW_GAP
    result.lines = lines
    for (source, target, _), dummies in passages.items():
        (x0, y0), (x1, y1) = centres[source], centres[target]
        points = [(x0 + BOX_WIDTH / 2, y0)]
        for dummy in dummies:  # through the column at the slot kept for this edge, left side to right side
            x, y = centres[dummy]
            points += [(x - BOX_WIDTH / 2, y), (x + BOX_WIDTH / 2, y)]
        points.append((x1 - BOX_WIDTH / 2, y1))
        result.edges.append((source, target, points))
    return result


def lineage_figure(graph: dict):
    """The graph drawn: a box per node (coloured by type; the chosen model outlined; a deleted dataset pale and
    dashed), an arrow per edge."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path

    placed = layout(graph)
    fig = Figure(figsize=(max(placed.width, 4.0), max(placed.height, 1.0)), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(0, max(placed.width, 4.0))
    ax.set_ylim(max(placed.height, 1.0), 0)  # inches from the top
    if not graph["nodes"]:
        ax.text(0.5, 0.5, "no lineage", ha="center", va="center", transform=ax.transAxes, fontsize=FONT_SIZE)
        return fig
    for _, _, points in placed.edges:
        ax.add_patch(FancyArrowPatch(path=Path(points), arrowstyle="-|>", mutation_scale=12, color="#94a3b8",
                                     linewidth=1.2, shrinkA=0, shrinkB=1, zorder=1))
    for node in graph["nodes"]:
        x, y, width, height = placed.boxes[node["id"]]
        deleted = node.get("deleted", False)
        colour = DELETED_COLOUR if deleted else NODE_COLOURS.get(node["type"], "#64748b")
        edge = "#111827" if node.get("selected") else ("#64748b" if deleted else colour)
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                    boxstyle="round,pad=0,rounding_size=0.08", facecolor=colour, edgecolor=edge,
                                    linewidth=2.2 if node.get("selected") else 1.2,
                                    linestyle="--" if deleted else "-", zorder=2))
        ax.text(x, y, "\n".join(placed.lines[node["id"]]), ha="center", va="center", fontsize=FONT_SIZE,
                color="#334155" if deleted else "white", fontweight="bold" if node.get("selected") else "normal",
                linespacing=1.25, zorder=3)
    return fig


def lineage_html(graph: dict) -> str:
    """The same graph as text, one "from → to" per edge (readable by screen readers, copyable, testable)."""
    labels = {node["id"]: node["label"] for node in graph["nodes"]}
    if not graph["edges"]:
        return ""
    items = "".join(f"<li>{html.escape(labels[edge['from']])} → {html.escape(labels[edge['to']])}</li>"
                    for edge in graph["edges"])
    return f'<details class="wb-lineage"><summary>Lineage as text</summary><ul>{items}</ul></details>'
