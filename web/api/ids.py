"""Id parameters of the API's paths and queries, bounded by what the database columns hold.

Every id column (and metric step, log line id) is an SQL INTEGER: 32 bits on PostgreSQL
(`db.models.SQL_INTEGER_MAX`). A larger number in a path or a query would reach the database driver and fail there (an OverflowError from
SQLite's driver beyond 64 bits, "integer out of range" from PostgreSQL beyond 32) as a 500; bounded
here, it is a 422 naming the parameter, like any other malformed request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from db.models import SQL_INTEGER_MAX

JobId = Annotated[int, Path(ge=1, le=SQL_INTEGER_MAX, description="a job's id")]
ModelId = Annotated[int, Path(ge=1, le=SQL_INTEGER_MAX, description="a model's id")]
DatasetId = Annotated[int, Path(ge=1, le=SQL_INTEGER_MAX, description="a dataset's id")]
ProjectId = Annotated[int, Path(ge=1, le=SQL_INTEGER_MAX, description="a labeling project's id")]
UserId = Annotated[int, Path(ge=1, le=SQL_INTEGER_MAX, description="a user's id")]


def bounded_query(description: str, *, ge: int = 0) -> Query:  # type: ignore[valid-type]
    """A Query() for a whole number compared with an INTEGER column (a log line id, a metric step)."""
    return Query(ge=ge, le=SQL_INTEGER_MAX, description=description)
