"""Admin tab: the user accounts, and forms to add one, change a role, disable / enable, reset a password.

Only admins see the tab: `wire` hides it on page load for everyone else (`gr.Tab(visible=...)`).
Hiding is a courtesy, not the lock: every handler passes the logged-in user to
`web.services.users`, which refuses anyone without `Action.manage_users` (and a disabled admin
whose browser session is still open), so a hand-crafted request from a labeler changes nothing.
A password left empty is generated and shown here once; it is stored only as a hash.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from db.models import Role
from web.ui import current_user, db_session, error_text
from web.ui.plots import message_html

TABLE_COLUMNS = ["id", "name", "role", "status", "created"]
ROLES = [role.value for role in Role]


# ----------------------------------------------------------------------------- pure shaping

def users_frame(users: list[dict]) -> pd.DataFrame:
    rows = [{"id": u["id"], "name": u["name"], "role": u["role"],
             "status": "disabled" if u["disabled"] else "enabled",
             "created": u["created_at"].strftime("%Y-%m-%d %H:%M") if u.get("created_at") else ""}
            for u in users]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def user_choices(users: list[dict]) -> list[tuple[str, int]]:
    return [(f"{u['name']} ({u['role']}{', disabled' if u['disabled'] else ''})", u["id"]) for u in users]


def generated_password_html(name: str, password: str, what: str) -> str:
    return (message_html(f"{what} The generated password for {name} is shown here once; it is stored only "
                         "as a hash. Pass it on now:", "ok")
            + f'<pre id="admin-generated-password" style="font-size:15px;margin:6px 0">{html.escape(password)}</pre>')


# ----------------------------------------------------------------------------- the tab

@dataclass
class AdminTab:
    settings: Any
    table: gr.Dataframe
    picker: gr.Dropdown

    # Each handler returns (message HTML, table, picker); a refusal or bad input is the message.

    def refresh(self, request: gr.Request | None = None) -> tuple[pd.DataFrame, Any]:
        """(table, picker) for an admin; empty for anyone else (the tab is hidden from them anyway)."""
        from web import services

        try:
            with db_session(self.settings) as session:
                users = services.list_users(self._actor(request), session=session)
        except services.ServiceError:
            users = []
        choices = user_choices(users)
        return users_frame(users), gr.Dropdown(choices=choices)

    def on_load(self, request: gr.Request | None = None):
        from web import services

        admin = services.can(current_user(self.settings, request), services.Action.manage_users)
        return (gr.Tab(visible=admin), *self.refresh(request))

    def add(self, name: str, role: str, password: str, request: gr.Request | None = None):
        from web import services

        def act(session):
            user, generated = services.add_user(session, self._actor(request), name, role, password or None)
            if generated:
                return generated_password_html(user.name, generated, f"Added {user.name} ({role}).")
            return message_html(f"Added {user.name} ({role}).", "ok")

        return self._run(act, request)

    def set_role(self, user_id: int | None, role: str, request: gr.Request | None = None):
        from web import services

        def act(session):
            user = services.change_user(session, self._actor(request), self._picked(user_id), role=role)
            return message_html(f"{user.name} is now {role}.", "ok")

        return self._run(act, request)

    def set_disabled(self, user_id: int | None, disabled: bool, request: gr.Request | None = None):
        from web import services

        def act(session):
            user = services.change_user(session, self._actor(request), self._picked(user_id), disabled=disabled)
            if disabled:
                return message_html(f"{user.name} is disabled: they cannot log in any more; their labels stay.", "ok")
            return message_html(f"{user.name} is enabled again.", "ok")

        return self._run(act, request)

    def reset_password(self, user_id: int | None, password: str, request: gr.Request | None = None):
        from web import services

        def act(session):
            user, generated = services.reset_password(session, self._actor(request), self._picked(user_id),
                                                      password or None)
            if generated:
                return generated_password_html(user.name, generated, "Password reset.")
            return message_html(f"New password set for {user.name}; the old one no longer works.", "ok")

        return self._run(act, request)

    def _run(self, act, request):
        from web import services

        try:
            with db_session(self.settings) as session:
                message = act(session)
        except services.ServiceError as error:
            message = message_html(f"Not changed — {error_text(error)}", "error")
        return (message, *self.refresh(request))

    def _actor(self, request: gr.Request | None) -> str | None:
        user = current_user(self.settings, request)
        return user["name"] if user else None

    @staticmethod
    def _picked(user_id: int | None) -> int:
        from web import services

        if user_id in (None, ""):
            raise services.InvalidInput("choose a user first", field="user")
        return int(user_id)

    def wire(self, blocks: gr.Blocks, page: gr.Tab) -> None:
        blocks.load(self.on_load, None, [page, self.table, self.picker], queue=False, api_visibility="private")
        page.select(self.refresh, None, [self.table, self.picker], queue=False, api_visibility="private")


def build(settings) -> AdminTab:
    gr.Markdown("User accounts. **admin**: everything, including this tab; **trainer**: datasets, jobs, models, "
                "chat, labeling projects; **labeler**: label and chat only. A disabled user cannot log in; their "
                "labels stay. There is always at least one enabled admin.")
    table = gr.Dataframe(users_frame([]), interactive=False, elem_id="admin-users", label="Users")
    message = gr.HTML(elem_id="admin-message")
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            gr.Markdown("**Add a user**")
            new_name = gr.Textbox(label="Name", elem_id="admin-new-name")
            new_role = gr.Dropdown(ROLES, value=Role.labeler.value, label="Role", elem_id="admin-new-role")
            new_password = gr.Textbox(label="Password (empty: generate one)", type="password",
                                      elem_id="admin-new-password")
            add = gr.Button("Add user", variant="primary", elem_id="admin-add")
        with gr.Column(min_width=300):
            gr.Markdown("**Change a user**")
            picker = gr.Dropdown(label="User", choices=[], elem_id="admin-user")
            with gr.Row():
                role = gr.Dropdown(ROLES, value=Role.trainer.value, label="Role", elem_id="admin-role", scale=2)
                set_role = gr.Button("Set role", elem_id="admin-set-role", scale=1)
            with gr.Row():
                disable = gr.Button("Disable", variant="stop", elem_id="admin-disable")
                enable = gr.Button("Enable", elem_id="admin-enable")
            new_user_password = gr.Textbox(label="New password (empty: generate one)", type="password",
                                           elem_id="admin-reset-password-text")
            reset = gr.Button("Reset password", elem_id="admin-reset-password")

    tab = AdminTab(settings=settings, table=table, picker=picker)
    outputs = [message, table, picker]
    private = {"api_visibility": "private"}
    add.click(tab.add, [new_name, new_role, new_password], outputs, **private).then(
        lambda: ("", ""), None, [new_name, new_password], **private)
    set_role.click(tab.set_role, [picker, role], outputs, **private)

    def disable_user(user_id: int | None, request: gr.Request):
        return tab.set_disabled(user_id, True, request)

    def enable_user(user_id: int | None, request: gr.Request):
        return tab.set_disabled(user_id, False, request)

    disable.click(disable_user, [picker], outputs, **private)
    enable.click(enable_user, [picker], outputs, **private)
    reset.click(tab.reset_password, [picker, new_user_password], outputs, **private).then(
        lambda: "", None, new_user_password, **private)
    return tab
