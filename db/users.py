"""User accounts: bcrypt password hashes, creating users, logging in, the first admin.

A disabled account (``users.disabled``) cannot log in: `authenticate`, which both the API's HTTP
Basic and the UI's login form call, refuses it. Its rows (labels, jobs) stay.

Passwords are hashed with bcrypt (salted, deliberately slow). bcrypt reads at most 72 bytes
of a password and the bcrypt 5 library refuses longer ones rather than truncating silently,
so we refuse them too, with a clear message, instead of hashing something else than was typed.
"""

from __future__ import annotations

import functools
import re
import secrets

import bcrypt
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Role, User

# Cost factor (2**rounds iterations): 12 takes a few hundred ms, a sane default for a login.
# Read at call time so the test suite can lower it (bcrypt's minimum is 4) to stay fast.
BCRYPT_ROUNDS = 12
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_BYTES = 72
ADMIN_NAME = "admin"

# Names show up in URLs, logs and the labeling stats; keep them plain. Must start with a
# letter or digit so "-rf" or ".hidden" never appear.
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InvalidUserInput(ValueError):
    """A value that cannot make a user, naming the field it came from (name, role or password)."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


class NameTaken(InvalidUserInput):
    """The user name is already used (compared case-insensitively)."""


def hash_password(password: str) -> str:
    """The bcrypt hash of ``password`` (``$2b$...``, 60 characters), with a fresh salt."""
    password_bytes = _password_bytes(password)
    return bcrypt.hashpw(password_bytes, bcrypt.gensalt(rounds=BCRYPT_ROUNDS)).decode("ascii")


def verify_password(password: str, password_hash: str) -> bool:
    """True when ``password`` matches ``password_hash``; False for a wrong or malformed input."""
    try:
        return bcrypt.checkpw(_password_bytes(password), password_hash.encode("ascii"))
    except ValueError:  # too long, not UTF-8 encodable, or not a bcrypt hash at all
        return False


def validate_password(password: str) -> None:
    """Raise InvalidUserInput (a ValueError) unless ``password`` is acceptable for an account."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidUserInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters long", "password")
    try:
        _password_bytes(password)
    except ValueError as error:
        raise InvalidUserInput(str(error), "password") from None


def generate_password() -> str:
    """A random password to hand out once (16 URL-safe characters, 96 bits); stored only as a hash."""
    return secrets.token_urlsafe(12)


def parse_role(role: Role | str) -> Role:
    """``role`` as a Role, or InvalidUserInput listing the roles."""
    try:
        return Role(getattr(role, "value", role))
    except ValueError:
        choices = ", ".join(member.value for member in Role)
        raise InvalidUserInput(f"unknown role {role!r}; choose one of: {choices}", "role") from None


def validate_user_name(name: str) -> None:
    """Raise InvalidUserInput (a ValueError) unless ``name`` is an acceptable user name."""
    if not _USER_NAME.match(name):
        raise InvalidUserInput(
            f"user name {name!r} is not valid: use 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit", "name"
        )


# Built once: every API request looks its caller up by name, and building the statement anew each time cost
# more CPU than running it (web/services/labeling_queries.py says why).
_USER_NAMED = select(User).where(User.name == bindparam("name"))


def user_named(session: Session, name: str) -> User | None:
    """The account with this name, or None."""
    return session.scalar(_USER_NAMED, {"name": name})


def create_user(session: Session, name: str, password: str, role: Role | str) -> User:
    """Add a user and flush (so ``user.id`` is set); the caller commits.

    Raises InvalidUserInput (a ValueError naming the field) for an invalid name, role or
    password, and its subclass NameTaken for a name already used (compared case-insensitively,
    so "Admin" cannot sit beside "admin"). Two processes adding the same name at once: the
    unique constraint makes the loser's flush raise IntegrityError.
    """
    validate_user_name(name)
    role = parse_role(role)
    validate_password(password)
    taken = session.scalar(select(User.id).where(func.lower(User.name) == name.lower()))
    if taken is not None:
        raise NameTaken(f"user name {name!r} is already taken", "name")
    user = User(name=name, role=role, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def set_password(user: User, password: str) -> None:
    """Give ``user`` a new password (validated, hashed); the caller commits."""
    validate_password(password)
    user.password_hash = hash_password(password)


def authenticate(session: Session, name: str, password: str) -> User | None:
    """The user with this name and password, or None (unknown name, wrong password, or disabled).

    A disabled account is checked like any other (same bcrypt time) and then refused, so a
    login attempt does not reveal which accounts are disabled.
    """
    user = user_named(session, name)
    if user is None:
        verify_password(password, _dummy_hash(BCRYPT_ROUNDS))  # spend the same time as a real check
        return None
    if not verify_password(password, user.password_hash) or user.disabled:
        return None
    return user


def ensure_admin(session: Session, password_from_env: str | None) -> str | None:
    """On first start, create the ``admin`` account; return a generated password, if any.

    Does nothing (returns None) when any user with the admin role exists. Otherwise creates
    ``admin`` with ``password_from_env`` (``WORKBENCH_ADMIN_PASSWORD``) and returns None, or,
    when that is empty, with a random password that it returns so the caller can print it
    once; it is stored nowhere in clear. Commits, so call it in a session of its own at start.
    If another process creates the admin at the same moment, this one returns None.
    """
    if _admin_exists(session):
        return None
    password = password_from_env or generate_password()
    generated = None if password_from_env else password
    try:
        create_user(session, ADMIN_NAME, password, Role.admin)
        session.commit()
    except IntegrityError:
        # The unique name lost a race with another process's ensure_admin.
        session.rollback()
        if _admin_exists(session):
            return None
        raise
    except ValueError as error:
        raise ValueError(f"cannot create the first admin account: {error}") from None
    return generated


def _admin_exists(session: Session) -> bool:
    return session.scalar(select(User.id).where(User.role == Role.admin).limit(1)) is not None


@functools.lru_cache(maxsize=4)
def _dummy_hash(rounds: int) -> str:
    # A real hash to check against when the user does not exist, so a login for an unknown
    # name takes as long as one with a wrong password (no user enumeration by timing). Made
    # on first use, not at import, and per cost factor so it matches the real hashes' cost.
    return bcrypt.hashpw(b"not-a-real-password", bcrypt.gensalt(rounds=rounds)).decode("ascii")


def _password_bytes(password: str) -> bytes:
    try:
        encoded = password.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a broken client
        raise ValueError("password is not valid Unicode text") from None
    if len(encoded) > MAX_PASSWORD_BYTES:
        raise ValueError(f"password must be at most {MAX_PASSWORD_BYTES} bytes (UTF-8)")
    return encoded
