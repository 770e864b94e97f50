"""User management for admins: list, add, change role, disable / enable, reset a password.

The API (/api/users), the Admin tab and `workbench users` all call these functions, so the rules
live here once:

- only admins may manage users (`Action.manage_users`, checked with `require`); a caller given
  as None is an internal one (the CLI run on the server, tests), which may;
- a name, role or password that cannot make an account is `InvalidInput` naming the field; a name
  already taken is `Conflict`;
- a password left out is generated and returned once (it is stored only as a bcrypt hash);
- there is always an enabled admin: a change that would demote or disable the last one is
  refused with `Conflict` and nothing is stored. Two admins demoting each other at the same
  moment cannot both win: on PostgreSQL the enabled admins' rows are locked (in id order, so no
  deadlock) before the change; on SQLite writers are serialised by the database lock. Either
  way the enabled admins are counted after the change, inside its transaction.
- a disabled account cannot log in (`db.users.authenticate`); its labels, jobs and datasets stay.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import users as accounts
from db.models import Role, User
from web.services.access import Action, require, resolve_user
from web.services.common import Conflict, InvalidInput, NotFound, PermissionDenied, enum_value, reading


def user_to_dict(user: User) -> dict:
    return {"id": user.id, "name": user.name, "role": enum_value(user.role), "disabled": bool(user.disabled),
            "created_at": user.created_at}


def list_users(actor: User | int | str | None, session: Session | None = None) -> list[dict]:
    """Every account, oldest first (admins only)."""
    with reading(session) as s:
        _acting_admin(s, actor)
        return [user_to_dict(user) for user in s.scalars(select(User).order_by(User.id))]


def find_user(session: Session, who: int | str) -> User:
    """The account with this id (int) or name (str), or NotFound."""
    if isinstance(who, int):
        user = session.get(User, who)
    else:
        user = accounts.user_named(session, who)
    if user is None:
        raise NotFound(f"user {who!r} does not exist")
    return user


def add_user(session: Session, actor: User | int | str | None, name: str, role: Role | str,
             password: str | None = None) -> tuple[User, str | None]:
    """Create an account and commit; returns (user, the generated password or None when one was given)."""
    _acting_admin(session, actor)
    generated = None
    if not password:
        password = generated = accounts.generate_password()
    try:
        user = accounts.create_user(session, (name or "").strip(), password, role)
        session.commit()
    except accounts.NameTaken as error:
        session.rollback()
        raise Conflict(str(error), field="name") from None
    except accounts.InvalidUserInput as error:
        session.rollback()
        raise InvalidInput(str(error), field=error.field) from None
    except IntegrityError:  # the same name added by another request at the same moment
        session.rollback()
        raise Conflict(f"user name {name!r} is already taken", field="name") from None
    return user, generated


def change_user(session: Session, actor: User | int | str | None, who: int | str, *,
                role: Role | str | None = None, disabled: bool | None = None) -> User:
    """Change an account's role and/or disabled flag and commit; never leaves no enabled admin."""
    _acting_admin(session, actor)
    if role is None and disabled is None:
        raise InvalidInput("nothing to change: give a new role, disabled, or both", field="role")
    try:
        new_role = accounts.parse_role(role) if role is not None else None
    except accounts.InvalidUserInput as error:
        raise InvalidInput(str(error), field=error.field) from None
    user = find_user(session, who)
    may_remove_an_admin = (new_role is not None and new_role != Role.admin) or disabled is True
    try:
        if may_remove_an_admin:
            _lock_enabled_admins(session)
        if new_role is not None:
            user.role = new_role
        if disabled is not None:
            user.disabled = disabled
        session.flush()
        if may_remove_an_admin and _enabled_admin_count(session) == 0:
            what = "disable" if disabled else "demote"
            raise Conflict(f"cannot {what} {user.name!r}: they are the last enabled admin; make another user an "
                           "admin first", field="disabled" if disabled else "role")
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return user


def reset_password(session: Session, actor: User | int | str | None, who: int | str,
                   password: str | None = None) -> tuple[User, str | None]:
    """Set a new password (or generate one, returned once) and commit; the old one stops working at once."""
    _acting_admin(session, actor)
    user = find_user(session, who)
    generated = None
    if not password:
        password = generated = accounts.generate_password()
    try:
        accounts.set_password(user, password)
        session.commit()
    except accounts.InvalidUserInput as error:
        session.rollback()
        raise InvalidInput(str(error), field=error.field) from None
    return user, generated


def _acting_admin(session: Session, actor: User | int | str | None) -> User | None:
    """The caller, if allowed to manage users. A disabled admin with a UI session still open is refused."""
    user = resolve_user(session, actor)
    require(user, Action.manage_users)
    if user is not None and user.disabled:
        raise PermissionDenied(f"user {user.name!r} is disabled")
    return user


def _enabled_admins():
    return select(User.id).where(User.role == Role.admin, User.disabled.is_(False))


def _lock_enabled_admins(session: Session) -> None:
    # SELECT ... FOR UPDATE on PostgreSQL: a concurrent change that could remove an admin waits for
    # ours to commit and then counts what we left. SQLite ignores FOR UPDATE (one writer at a time).
    session.execute(_enabled_admins().order_by(User.id).with_for_update()).all()


def _enabled_admin_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(_enabled_admins().subquery()))
