"""The lineage graph of a model as a picture: data and labels on the left, then jobs, then models, left to right
in the order they were made (web.services.lineage gives the graph; this module only draws it)."""

from __future__ import annotations

from collections import defaultdict

NODE_COLOURS = {"dataset": "#0ea5e9", "labels": "#16a34a", "arena": "#d97706", "job": "#94a3b8", "model": "#6366f1"}


def layers(graph: dict) -> dict[str, int]:
    """Each node's column: the length of the longest path reaching it (sources are 0)."""
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
    return depth


def lineage_figure(graph: dict):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    depth = layers(graph)
    columns: dict[int, list[dict]] = defaultdict(list)
    for node in graph["nodes"]:
        columns[depth[node["id"]]].append(node)
    height = max((len(nodes) for nodes in columns.values()), default=1)
    fig = Figure(figsize=(max(6.0, 2.3 * len(columns)), max(1.8, 0.8 * height + 0.6)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_axis_off()
    if not graph["nodes"]:
        ax.text(0.5, 0.5, "no lineage", ha="center", va="center", transform=ax.transAxes)
        return fig
    position = {}
    for column, nodes in columns.items():
        for row, node in enumerate(nodes):
            position[node["id"]] = (column, (height - 1) / 2 - row + (len(nodes) - 1) / 2 - (height - 1) / 2)
    for edge in graph["edges"]:
        (x0, y0), (x1, y1) = position[edge["from"]], position[edge["to"]]
        ax.annotate("", xy=(x1 - 0.38, y1), xytext=(x0 + 0.38, y0),
                    arrowprops={"arrowstyle": "->", "color": "#94a3b8", "lw": 1.2})
    for node in graph["nodes"]:
        x, y = position[node["id"]]
        colour = NODE_COLOURS.get(node["type"], "#64748b")
        ax.text(x, y, node["label"], ha="center", va="center", fontsize=8, color="white",
                fontweight="bold" if node.get("selected") else "normal", wrap=True,
                bbox={"boxstyle": "round,pad=0.4", "facecolor": colour,
                      "edgecolor": "#111827" if node.get("selected") else colour, "linewidth": 2})
    ax.set_xlim(-0.6, max(columns) + 0.6)
    ax.set_ylim(-height / 2 - 0.2, height / 2 + 0.2)
    return fig


def lineage_html(graph: dict) -> str:
    """The same graph as text, one "from → to" per edge (readable by screen readers, copyable, testable)."""
    import html

    labels = {node["id"]: node["label"] for node in graph["nodes"]}
    if not graph["edges"]:
        return ""
    items = "".join(f"<li>{html.escape(labels[edge['from']])} → {html.escape(labels[edge['to']])}</li>"
                    for edge in graph["edges"])
    return f'<details class="wb-lineage"><summary>Lineage as text</summary><ul>{items}</ul></details>'
