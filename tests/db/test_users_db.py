"""User accounts in the database (db/users.py): password hashing, creating and authenticating users with their
names and passwords checked, and the first admin made once on an empty database (generated or configured)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import db.users
from db.models import Role, User
from db.users import authenticate, create_user, ensure_admin, hash_password, verify_password


def test_password_hashing() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith(f"$2b${db.users.BCRYPT_ROUNDS:02d}$") and "correct horse" not in hashed
    assert hash_password("correct horse") != hashed  # salted
    assert verify_password("correct horse", hashed)
    assert not verify_password("correct horsE", hashed)
    assert not verify_password("correct horse", "not a bcrypt hash")
    assert not verify_password("x" * 73, hashed)
    with pytest.raises(ValueError, match="at most 72 bytes"):
        hash_password("é" * 37)  # 74 bytes in UTF-8


def test_create_user_and_authenticate(session: Session) -> None:
    user = create_user(session, "ada", "analytical engine", "trainer")
    session.commit()
    assert user.id is not None and user.role is Role.trainer
    assert user.password_hash != "analytical engine"
    assert authenticate(session, "ada", "analytical engine") == user
    assert authenticate(session, "ada", "analytical engines") is None
    assert authenticate(session, "nobody", "analytical engine") is None


@pytest.mark.parametrize(
    ("name", "password", "role", "message"),
    [
        ("", "long enough", Role.trainer, "user name '' is not valid"),
        ("has space", "long enough", Role.trainer, "is not valid"),
        ("-rf", "long enough", Role.trainer, "starting with a letter or digit"),
        ("x" * 65, "long enough", Role.trainer, "1 to 64"),
        ("ada", "short", Role.trainer, "at least 8 characters"),
        ("ada", "long enough", "root", "unknown role 'root'; choose one of: admin, trainer, labeler"),
        ("Grace", "long enough", Role.labeler, "already taken"),
    ],
)
def test_create_user_validates(session: Session, name: str, password: str, role: Any, message: str) -> None:
    create_user(session, "grace", "long enough", Role.labeler)
    with pytest.raises(ValueError, match=message):
        create_user(session, name, password, role)
    assert session.scalar(select(func.count()).select_from(User)) == 1


def test_ensure_admin_generates_a_password_once(session: Session) -> None:
    generated = ensure_admin(session, None)
    assert generated is not None and len(generated) >= 16
    admin = authenticate(session, "admin", generated)
    assert admin is not None and admin.role is Role.admin
    assert ensure_admin(session, None) is None
    assert ensure_admin(session, "another password") is None
    assert session.scalar(select(func.count()).select_from(User)) == 1
    assert authenticate(session, "admin", "another password") is None


def test_ensure_admin_uses_the_configured_password(session: Session) -> None:
    assert ensure_admin(session, "from the environment") is None
    assert authenticate(session, "admin", "from the environment") is not None


def test_ensure_admin_does_nothing_when_an_admin_exists(session: Session) -> None:
    create_user(session, "root", "long enough", Role.admin)
    session.commit()
    assert ensure_admin(session, None) is None
    assert session.scalars(select(User.name)).all() == ["root"]


def test_ensure_admin_explains_a_bad_configured_password(session: Session) -> None:
    with pytest.raises(ValueError, match="first admin account: password must be at least 8"):
        ensure_admin(session, "short")
