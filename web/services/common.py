"""What every service module shares: the errors the front ends map to answers, and small helpers.

The functions raise `ServiceError` subclasses with a message meant for people; the API turns them
into HTTP status codes (`web/api/errors.py`), the UI shows the message.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy.orm import Session

from db.session import session_scope
from db.settings import safe_join
from llm.printable import first_unprintable



class ServiceError(Exception):
    """A request the service refuses, with a message for the person who made it."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field  # the input that is wrong, when one is (e.g. "file", "params.max_steps")


class InvalidInput(ServiceError):
    """The input is wrong (API: 422)."""


class NotFound(ServiceError):
    """An id that does not exist (API: 404)."""


class PermissionDenied(ServiceError):
    """The user's role does not allow this (API: 403)."""


class UploadTooLarge(ServiceError):
    """The upload is over `settings.max_upload_mb` (API: 413)."""


class Conflict(ServiceError):
    """The thing exists but is in a state that does not allow this (API: 409)."""




def refuse_unprintable(text: str, field: str) -> None:
    """InvalidInput naming `field` when the name `text` holds a control or bidirectional control character
    (llm/printable.py says which and why)."""
    found = first_unprintable(text)
    if found is not None:
        raise InvalidInput(f"{field} holds {found}: control and bidirectional control characters are not allowed "
                           "in names", field=field)


@contextmanager
def reading(session: Session | None) -> Iterator[Session]:
    """Use the caller's session, or open a short one (the UI's case)."""
    if session is not None:
        yield session
        return
    with session_scope() as own:
        yield own


def enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


def parse_enum(enum_class: type, value: Any, field: str) -> Any:
    """`enum_class(value)`, or InvalidInput listing the allowed values."""
    try:
        return enum_class(enum_value(value))
    except ValueError:
        allowed = ", ".join(member.value for member in enum_class)
        raise InvalidInput(f"{field} {value!r} is not one of: {allowed}", field=field) from None


@contextmanager
def stored_all_or_nothing(session: Session, root: Path, prefix: str
                          ) -> Iterator[tuple[Path, Callable[[int], Path]]]:
    """Write files for a new row into a staging directory, then move them to `root/<row id>` and commit.

    Yields (staging directory, place): write into staging, add and flush the row, then call
    `place(row.id)`, which renames staging to its final directory and returns it. The session is
    committed when the block ends; on any error the row is rolled back and both directories are
    removed, so neither a row without files nor files without a row are left. The staging name is
    ours (a uuid), never derived from anything a user typed.
    """
    root.mkdir(parents=True, exist_ok=True)
    staging = safe_join(root, f".{prefix}-{uuid.uuid4().hex}")
    placed: list[Path] = []

    def place(row_id: int) -> Path:
        final = safe_join(root, str(row_id))
        # Left over from a database that was reset while the data dir was kept: never mix the two.
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        placed.append(final)
        return final

    try:
        yield staging, place
        session.commit()
    except BaseException:
        session.rollback()
        shutil.rmtree(staging, ignore_errors=True)
        for directory in placed:
            shutil.rmtree(directory, ignore_errors=True)
        raise
