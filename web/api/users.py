"""/api/users: list, add, change role or disable, reset a password (admins only).

Every route depends on `Action.manage_users`, so a trainer or labeler gets 403 before the body is
read; the rules themselves (validation, generated passwords, the last enabled admin) are in
`web.services.users`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, status
from sqlalchemy.orm import Session

from db.models import User
from web import services
from web.api.errors import ERROR_RESPONSES
from web.api.ids import UserId
from web.auth import get_db_session, user_allowed_to
from web.schemas import ErrorOut, PasswordReset, UserCreate, UserOut, UserUpdate, UserWithPasswordOut

DbSession = Annotated[Session, Depends(get_db_session)]
UserAdmin = Annotated[User, Depends(user_allowed_to(services.Action.manage_users))]
router = APIRouter(prefix="/api/users", responses=ERROR_RESPONSES, tags=["users"])

INVALID = {422: {"model": ErrorOut, "description": "a name, role or password that cannot be used (the field is named)"}}


@router.get("", response_model=list[UserOut])
def list_users(admin: UserAdmin, session: DbSession) -> Any:
    """Every account, oldest first."""
    return services.list_users(admin, session=session)


@router.post("", response_model=UserWithPasswordOut, status_code=status.HTTP_201_CREATED,
             responses={**INVALID, 409: {"model": ErrorOut, "description": "the name is already taken"}})
def add_user(body: UserCreate, admin: UserAdmin, session: DbSession) -> Any:
    """Add an account. Without a password one is generated and returned in this answer only."""
    user, generated = services.add_user(session, admin, body.name, body.role, body.password)
    return {**services.user_to_dict(user), "generated_password": generated}


@router.patch("/{user_id}", response_model=UserOut,
              responses={**INVALID, 409: {"model": ErrorOut, "description": "it would leave no enabled admin"}})
def change_user(user_id: UserId, body: UserUpdate, admin: UserAdmin, session: DbSession) -> Any:
    """Change the role and/or disable (or enable) an account. A disabled user cannot log in; their labels stay."""
    user = services.change_user(session, admin, user_id, role=body.role, disabled=body.disabled)
    return services.user_to_dict(user)


@router.post("/{user_id}/password", response_model=UserWithPasswordOut, responses=INVALID)
def reset_password(user_id: UserId, body: PasswordReset, admin: UserAdmin, session: DbSession) -> Any:
    """Set a new password, or leave it out to get a generated one (returned in this answer only)."""
    user, generated = services.reset_password(session, admin, user_id, body.password)
    return {**services.user_to_dict(user), "generated_password": generated}
