"""Evaluations side by side: the table `workbench evaluate` prints and the Models tab's comparison shows.

One row per result (a model on some data): the text numbers of `llm.evaluate` (loss, perplexity, bits per byte)
and a benchmark's of `llm.multiple_choice` (acc, acc_norm), each shown with its standard error when it has one.
Imports no torch: the web process lays tables out without loading it.
"""

from __future__ import annotations

# What an evaluation reports, in the order a table shows it: (result key, heading, key of its standard error).
RESULT_COLUMNS = (
    ("questions", "questions", None), ("acc", "acc", "acc_stderr"), ("acc_norm", "acc_norm", "acc_norm_stderr"),
    ("tokens", "tokens", None), ("val_loss", "loss", None), ("perplexity", "perplexity", None),
    ("val_bpb", "bits per byte", None),
)
NAME_COLUMNS = (("model", "model"), ("data", "data"))  # what each row is of, when the results say


def _shown(value, stderr=None) -> str:
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:.4f}" + (f" ± {stderr:.4f}" if stderr is not None else "")


def results_table(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(headings, rows) of evaluations side by side, one row per result: its model and data (when given) and
    the columns of `RESULT_COLUMNS` that some result has, a value shown with its standard error when known."""
    names = [(key, heading) for key, heading in NAME_COLUMNS if any(key in result for result in results)]
    columns = [column for column in RESULT_COLUMNS if any(result.get(column[0]) is not None for result in results)]
    headings = [heading for _, heading in names] + [heading for _, heading, _ in columns]
    rows = [[str(result.get(key, "")) for key, _ in names]
            + [_shown(result.get(key), result.get(error) if error else None) for key, _, error in columns]
            for result in results]
    return headings, rows


def format_table(headings: list[str], rows: list[list[str]]) -> str:
    """A plain text table: columns padded to their widest cell, numbers right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(headings, *rows)]
    numeric = [all(not cell or cell[0].isdigit() or cell[0] == "-" for cell in column[1:])
               for column in zip(headings, *rows)]
    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(width) if right else cell.ljust(width)
                         for cell, width, right in zip(cells, widths, numeric)).rstrip()
    return "\n".join([line(headings), line(["-" * width for width in widths])] + [line(row) for row in rows])
