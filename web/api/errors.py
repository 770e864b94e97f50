"""How service errors become HTTP answers, in one place for every router.

    InvalidInput 422 (detail lists the field, like FastAPI's own validation errors)
    NotFound 404 · PermissionDenied 403 · UploadTooLarge 413 · Conflict 409

and how two database failures that are not the server's fault become answers instead of 500s:

    the database busy (SQLite locked, a PostgreSQL lock wait timed out, a deadlock) 503 + Retry-After
    a number too large for its column (an id beyond INTEGER that no route bounded) 422

Routes should still bound their ids (`web/api/ids.py`) so the 422 names the field; the mapping
here is the net under anything that slips through.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError

from web import services
from web.api.ids import SQL_INTEGER_MAX
from web.schemas import ErrorOut

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no or wrong credentials"},
    403: {"model": ErrorOut, "description": "the user's role does not allow this"},
    404: {"model": ErrorOut, "description": "unknown id"},
}

STATUS_OF_ERROR: dict[type[services.ServiceError], int] = {
    services.InvalidInput: status.HTTP_422_UNPROCESSABLE_CONTENT,
    services.NotFound: status.HTTP_404_NOT_FOUND,
    services.PermissionDenied: status.HTTP_403_FORBIDDEN,
    services.UploadTooLarge: status.HTTP_413_CONTENT_TOO_LARGE,
    services.Conflict: status.HTTP_409_CONFLICT,
}


def _service_error_response(request: Request, error: services.ServiceError) -> JSONResponse:
    code = next((c for cls, c in STATUS_OF_ERROR.items() if isinstance(error, cls)), status.HTTP_400_BAD_REQUEST)
    if code == status.HTTP_422_UNPROCESSABLE_CONTENT:
        # Same shape as FastAPI's request validation errors, so clients handle both alike.
        where = "query" if request.method == "GET" else "body"
        location = [where, *(error.field.split(".") if error.field else [])]
        return JSONResponse(status_code=code, content={"detail": [
            {"loc": location, "msg": error.message, "type": "value_error"}]})
    return JSONResponse(status_code=code, content={"detail": error.message})


BUSY_RETRY_AFTER_SECONDS = 5
BUSY_MESSAGE = "the database is busy; try again in a few seconds"
# PostgreSQL SQLSTATEs of a transaction that lost a race, not of a broken request or server:
# lock_not_available (lock_timeout), deadlock_detected, serialization_failure.
_POSTGRES_BUSY_STATES = {"55P03", "40P01", "40001"}
_SQLITE_BUSY_MESSAGES = ("database is locked", "database table is locked", "database is busy")
_OUT_OF_RANGE_MESSAGE = f"a number in the request is too large for the database (ids go up to {SQL_INTEGER_MAX})"


def is_database_busy(error: BaseException) -> bool:
    """Whether a DBAPI error means "another transaction holds the lock; the same request may work soon"."""
    original = getattr(error, "orig", error)
    if getattr(original, "sqlstate", None) in _POSTGRES_BUSY_STATES:
        return True
    return any(text in str(original).lower() for text in _SQLITE_BUSY_MESSAGES)


def _operational_error_response(request: Request, error: OperationalError) -> JSONResponse:
    if not is_database_busy(error):
        raise error
    return JSONResponse(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, content={"detail": BUSY_MESSAGE},
                        headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)})


def _out_of_range_response(request: Request, error: Exception) -> JSONResponse:
    original = getattr(error, "orig", error)
    too_large = (getattr(original, "sqlstate", None) == "22003"  # PostgreSQL numeric_value_out_of_range
                 or (isinstance(error, OverflowError) and "SQLite INTEGER" in str(error)))
    if not too_large:
        raise error
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": [
        {"loc": ["path" if request.method == "GET" else "body"], "msg": _OUT_OF_RANGE_MESSAGE,
         "type": "value_error"}]})


def register_error_handlers(app: FastAPI) -> None:
    """Map `services.ServiceError` and the database failures above to HTTP answers (exception handlers
    live on the app, not a router)."""
    app.add_exception_handler(services.ServiceError, _service_error_response)  # type: ignore[arg-type]
    app.add_exception_handler(OperationalError, _operational_error_response)  # type: ignore[arg-type]
    app.add_exception_handler(DataError, _out_of_range_response)  # type: ignore[arg-type]
    app.add_exception_handler(OverflowError, _out_of_range_response)
