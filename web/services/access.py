"""Who may do what: one table of actions and the roles allowed each, checked on the server.

Every service function that changes something calls `require(user, action)` (or, for a thing with
an owner, `require_owner`); the API's dependencies and the UI (which hides or greys out what a role
cannot do) ask `can(user, action)`. The rule lives here once: admins do everything; trainers work
with data, jobs and models and change only their own datasets, jobs, models, labeling projects (theirs, or
those they co-own) and the arena places of their own models; labelers label and chat (they
see neither datasets nor jobs, and of the models only the chat models, by name only where blind labelers is off:
`sees_model_names`).
"""

from __future__ import annotations

import enum
from collections.abc import Collection

from sqlalchemy.orm import Session

from db.models import Role, User
from db.settings import get_settings
from db.users import user_named
from web.services.common import PermissionDenied, enum_value, reading


class Action(str, enum.Enum):
    write = "upload datasets and submit jobs"   # the training team's work
    read_training = "see datasets, jobs (parameters, logs, metrics) and every model, and download models"
    change_own_job = "cancel, resume, rename or delete their own jobs"
    change_any_job = "cancel, resume, rename or delete anyone's jobs"
    change_own_model = "rename or delete their own models"
    change_own_dataset = "rename or delete their own datasets"
    change_any_dataset = "rename or delete anyone's datasets"
    change_any_model = "rename or delete anyone's models"
    chat = "chat with models"
    label = "label answers"
    manage_labeling = ("create labeling projects, and change their own (guidelines, co-owners), see their agreement "
                       "and export them with the labelers' names")
    change_any_project = "change anyone's labeling project, see its agreement and export it with the labelers' names"
    manage_models = "import models"
    manage_arena = "put their own chat models in the arena or take them out"
    manage_any_arena = "put anyone's chat models in the arena or take them out"
    manage_users = "manage users"
    see_model_names = "be told which model wrote an answer (labelers are, only where blind labelers is off)"


ALLOWED_ROLES: dict[Action, tuple[Role, ...]] = {
    Action.write: (Role.admin, Role.trainer),
    Action.read_training: (Role.admin, Role.trainer),
    Action.change_own_job: (Role.admin, Role.trainer),
    Action.change_any_job: (Role.admin,),
    Action.change_own_model: (Role.admin, Role.trainer),
    Action.change_any_model: (Role.admin,),
    Action.change_own_dataset: (Role.admin, Role.trainer),
    Action.change_any_dataset: (Role.admin,),
    Action.chat: (Role.admin, Role.trainer, Role.labeler),
    Action.label: (Role.admin, Role.trainer, Role.labeler),
    Action.manage_labeling: (Role.admin, Role.trainer),
    Action.change_any_project: (Role.admin,),
    Action.manage_models: (Role.admin,),
    Action.manage_arena: (Role.admin, Role.trainer),
    Action.manage_any_arena: (Role.admin,),
    Action.manage_users: (Role.admin,),
    Action.see_model_names: (Role.admin, Role.trainer),
}


def can(user: User | dict | None, action: Action) -> bool:
    """Whether `user` (a row, or the UI's {name, role} dict) may do `action`; None = an internal caller
    (CLI, tests, the system itself), which may do everything."""
    if user is None:
        return True
    if _field(user, "disabled"):  # an account disabled while its browser session is still open
        return False
    role = user.get("role") if isinstance(user, dict) else user.role
    return enum_value(role) in {r.value for r in ALLOWED_ROLES[action]}


def _field(user: User | dict, name: str):
    return user.get(name) if isinstance(user, dict) else getattr(user, name, None)


def require(user: User | dict | None, action: Action) -> None:
    """Refuse `action` to a user whose role does not allow it (PermissionDenied, API 403)."""
    if not can(user, action):
        if _field(user, "disabled"):
            raise PermissionDenied(f"the account {_field(user, 'name')!r} is disabled")
        roles = " or ".join(r.value for r in ALLOWED_ROLES[action])
        raise PermissionDenied(f"user {_field(user, 'name')!r} has the role {enum_value(_field(user, 'role'))!r}, "
                               f"which cannot {action.value}; that needs the {roles} role")


def can_change(user: User | dict | None, owner_id: int | Collection[int] | None, own: Action, anyone: Action) -> bool:
    """Whether `user` may change a thing owned by `owner_id` (an id, or the ids of its owners: a labeling project's
    owner and co-owners): anyone's with `anyone`, or their own with `own`."""
    if can(user, anyone):
        return True
    owners = {owner_id} if owner_id is None or isinstance(owner_id, int) else set(owner_id)
    return can(user, own) and _field(user, "id") in owners - {None}


def require_owner(user: User | dict | None, owner_id: int | Collection[int] | None, own: Action, anyone: Action,
                  what: str) -> None:
    """Refuse a change to `what` (e.g. "job 7") unless it is the user's own and their role may change their
    own, or their role may change anyone's (PermissionDenied, API 403)."""
    if can_change(user, owner_id, own, anyone):
        return
    require(user, own)  # a role that may not even change its own things is told so
    roles = " or ".join(r.value for r in ALLOWED_ROLES[anyone])
    raise PermissionDenied(f"{what} belongs to someone else; user {_field(user, 'name')!r} can {own.value}, "
                           f"and changing another person's needs the {roles} role")


def sees_model_names(user: User | dict | None) -> bool:
    """Whether `user` is told model names (and where a model came from): the training team always, labelers
    only when the workbench's "blind labelers" setting (WORKBENCH_BLIND_LABELERS, on by default) is off, so that
    what they label and vote is not swayed by knowing, or learning, which model wrote it."""
    return can(user, Action.see_model_names) or not get_settings().blind_labelers


def resolve_user(session: Session, who: User | int | str | None) -> User | None:
    """A `User` from a row, an id or a user name (the UI knows only `request.username`)."""
    if who is None or isinstance(who, User):
        return who
    if isinstance(who, int):
        user = session.get(User, who)
    else:
        user = user_named(session, who)
    if user is None:
        raise PermissionDenied(f"unknown user {who!r}")
    return user


def get_user(name: str, session: Session | None = None) -> dict | None:
    """{id, name, role, disabled} of a user by name, or None (the UI uses it to show who is logged in;
    a disabled account's open session can then do nothing: `can` refuses it everything)."""
    with reading(session) as s:
        user = user_named(s, name)
        if user is None:
            return None
        return {"id": user.id, "name": user.name, "role": enum_value(user.role), "disabled": bool(user.disabled)}
