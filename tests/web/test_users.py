"""Users and roles: the /api/users routes and their role checks, the last-admin guard (also under
concurrency), disabled accounts refused at login, `workbench users` end to end, and the Admin tab's
handlers (called directly, no browser).

Runs on SQLite and PostgreSQL (the `database_url` fixture is parametrised).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from db.models import Role, User
from db.session import session_scope
from db.users import authenticate
from tests.conftest import ADMIN, LABELER, TRAINER
from web import services

USERS_URL = "/api/users"


def user_row(session, name: str) -> User:
    session.expire_all()
    return session.scalar(select(User).where(User.name == name))


# ----------------------------------------------------------------------------- the API: who may

@pytest.mark.parametrize("who", [TRAINER, LABELER])
def test_only_admins_may_manage_users(client, users, who):
    target = users["labeler"].id
    attempts = [
        client.get(USERS_URL, auth=who),
        client.post(USERS_URL, json={"name": "mallory", "role": "admin", "password": "mallory-pass"}, auth=who),
        client.patch(f"{USERS_URL}/{target}", json={"role": "admin"}, auth=who),
        client.patch(f"{USERS_URL}/{target}", json={"disabled": True}, auth=who),
        client.post(f"{USERS_URL}/{target}/password", json={"password": "a-new-password"}, auth=who),
    ]
    for response in attempts:
        assert response.status_code == 403, response.text
        assert "manage users" in response.json()["detail"]
    listed = client.get(USERS_URL, auth=ADMIN).json()
    assert "mallory" not in {u["name"] for u in listed}
    assert {u["name"]: u["role"] for u in listed}[LABELER[0]] == "labeler"
    assert client.get(USERS_URL).status_code == 401


def test_admin_adds_a_user_who_can_then_log_in_with_their_role(client, users):
    created = client.post(USERS_URL, json={"name": "alice", "role": "labeler", "password": "alice-password"},
                          auth=ADMIN)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "alice" and body["role"] == "labeler" and body["disabled"] is False
    assert body["generated_password"] is None
    alice = ("alice", "alice-password")
    assert client.get("/api/labeling/projects", auth=alice).status_code == 200  # a labeler may label
    assert client.get(USERS_URL, auth=alice).status_code == 403  # a labeler, not an admin
    assert "alice" in [u["name"] for u in client.get(USERS_URL, auth=ADMIN).json()]


def test_a_generated_password_is_returned_once_and_works(client, users):
    body = client.post(USERS_URL, json={"name": "bob", "role": "trainer"}, auth=ADMIN).json()
    password = body["generated_password"]
    assert password and len(password) >= 16
    assert client.get("/api/jobs", auth=("bob", password)).status_code == 200
    listed = client.get(USERS_URL, auth=ADMIN).json()
    assert all("generated_password" not in u and "password_hash" not in u for u in listed)


def test_bad_input_names_the_field_and_stores_nothing(client, users):
    cases = [({"name": "-rf", "role": "labeler", "password": "long-enough"}, "name"),
             ({"name": "carol", "role": "superuser", "password": "long-enough"}, "role"),
             ({"name": "carol", "role": "labeler", "password": "short"}, "password")]
    for payload, field in cases:
        response = client.post(USERS_URL, json=payload, auth=ADMIN)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", field]
    taken = client.post(USERS_URL, json={"name": TRAINER[0].upper(), "role": "labeler", "password": "long-enough"},
                        auth=ADMIN)
    assert taken.status_code == 409 and "already taken" in taken.json()["detail"]
    names = [u["name"] for u in client.get(USERS_URL, auth=ADMIN).json()]
    assert sorted(names) == sorted([ADMIN[0], TRAINER[0], LABELER[0]])
    bad_role = client.patch(f"{USERS_URL}/{users['trainer'].id}", json={"role": "root"}, auth=ADMIN)
    assert bad_role.status_code == 422 and bad_role.json()["detail"][0]["loc"] == ["body", "role"]
    assert client.patch(f"{USERS_URL}/{users['trainer'].id}", json={}, auth=ADMIN).status_code == 422
    assert client.patch(f"{USERS_URL}/999999", json={"role": "trainer"}, auth=ADMIN).status_code == 404


def test_change_role_takes_effect_on_the_next_request(client, users):
    assert client.get(USERS_URL, auth=TRAINER).status_code == 403
    changed = client.patch(f"{USERS_URL}/{users['trainer'].id}", json={"role": "admin"}, auth=ADMIN)
    assert changed.status_code == 200 and changed.json()["role"] == "admin"
    assert client.get(USERS_URL, auth=TRAINER).status_code == 200


def test_disabled_user_gets_401_even_right_after_a_successful_request_and_keeps_their_rows(client, users, session):
    assert client.get("/api/labeling/projects", auth=LABELER).status_code == 200  # now in the verified-credentials cache
    response = client.patch(f"{USERS_URL}/{users['labeler'].id}", json={"disabled": True}, auth=ADMIN)
    assert response.status_code == 200 and response.json()["disabled"] is True
    assert client.get("/api/labeling/projects", auth=LABELER).status_code == 401
    session.expire_all()
    assert authenticate(session, *LABELER) is None  # the UI's login goes through the same check
    assert user_row(session, LABELER[0]) is not None  # the account (and what points at it) stays
    client.patch(f"{USERS_URL}/{users['labeler'].id}", json={"disabled": False}, auth=ADMIN)
    assert client.get("/api/labeling/projects", auth=LABELER).status_code == 200


def test_reset_password_old_one_stops_working(client, users):
    url = f"{USERS_URL}/{users['trainer'].id}/password"
    assert client.get("/api/jobs", auth=TRAINER).status_code == 200
    response = client.post(url, json={"password": "a-brand-new-password"}, auth=ADMIN)
    assert response.status_code == 200 and response.json()["generated_password"] is None
    assert client.get("/api/jobs", auth=TRAINER).status_code == 401
    assert client.get("/api/jobs", auth=(TRAINER[0], "a-brand-new-password")).status_code == 200
    generated = client.post(url, json={}, auth=ADMIN).json()["generated_password"]
    assert client.get("/api/jobs", auth=(TRAINER[0], generated)).status_code == 200
    short = client.post(url, json={"password": "short"}, auth=ADMIN)
    assert short.status_code == 422 and short.json()["detail"][0]["loc"] == ["body", "password"]
    assert client.get("/api/jobs", auth=(TRAINER[0], generated)).status_code == 200  # unchanged


# ----------------------------------------------------------------------------- the last enabled admin

def test_the_last_enabled_admin_cannot_be_demoted_or_disabled(client, users, session):
    admin_id = users["admin"].id
    for change in ({"role": "trainer"}, {"disabled": True}, {"role": "labeler", "disabled": True}):
        response = client.patch(f"{USERS_URL}/{admin_id}", json=change, auth=ADMIN)
        assert response.status_code == 409, response.text
        assert "last enabled admin" in response.json()["detail"]
    row = user_row(session, ADMIN[0])
    assert row.role == Role.admin and row.disabled is False
    # With a second admin, one of them may step down; then the other is the last one.
    client.patch(f"{USERS_URL}/{users['trainer'].id}", json={"role": "admin"}, auth=ADMIN)
    assert client.patch(f"{USERS_URL}/{admin_id}", json={"disabled": True}, auth=TRAINER).status_code == 200
    assert client.patch(f"{USERS_URL}/{users['trainer'].id}", json={"role": "trainer"},
                        auth=TRAINER).status_code == 409
    # A disabled admin does not count, and re-enabling one is always allowed.
    assert client.patch(f"{USERS_URL}/{admin_id}", json={"disabled": False}, auth=TRAINER).status_code == 200


def test_two_admins_demoting_each_other_at_once_leave_one_admin(api_settings, session, database_url, monkeypatch):
    import time

    from db.users import create_user
    from web.services import users as user_service

    # Widen the race: each request pauses between its own change and its count of the admins left,
    # so without the row locks both would count the other's admin as still there and both commit.
    count_admins = user_service._enabled_admin_count
    monkeypatch.setattr(user_service, "_enabled_admin_count", lambda s: (time.sleep(0.5), count_admins(s))[1])
    first = create_user(session, "admin-a", "password-a", Role.admin)
    second = create_user(session, "admin-b", "password-b", Role.admin)
    session.commit()
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def demote(actor_id: int, target_id: int) -> None:
        barrier.wait()
        try:
            with session_scope(database_url) as own:
                services.change_user(own, actor_id, target_id, role="trainer")
            outcomes.append("demoted")
        except services.Conflict:
            outcomes.append("refused")

    threads = [threading.Thread(target=demote, args=(first.id, second.id)),
               threading.Thread(target=demote, args=(second.id, first.id))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["demoted", "refused"]
    session.expire_all()
    admins = session.scalars(select(User).where(User.role == Role.admin, User.disabled.is_(False))).all()
    assert len(admins) == 1


def test_a_disabled_admin_with_an_open_session_cannot_manage_users(session, users):
    # The UI keeps a login cookie; the service refuses a disabled caller even so.
    services.change_user(session, None, users["trainer"].id, role="admin")
    services.change_user(session, None, users["admin"].id, disabled=True)
    with pytest.raises(services.PermissionDenied, match="disabled"):
        services.add_user(session, ADMIN[0], "eve", "admin", "eve-password")
    assert user_row(session, "eve") is None


# ----------------------------------------------------------------------------- `workbench users`

def workbench(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run the real console script's module in a child process with the test's environment."""
    return subprocess.run([sys.executable, "-m", "web.cli", "users", *argv], capture_output=True, text=True,
                          input=stdin, env=os.environ.copy(), timeout=120)


def test_cli_round_trip(workbench_env, session):
    added = workbench("add", "dana", "--role", "labeler")
    assert added.returncode == 0, added.stderr
    generated = next(line.split(": ", 1)[1] for line in added.stdout.splitlines() if line.startswith("password for"))
    assert authenticate(session, "dana", generated) is not None

    assert workbench("add", "erin", "--role", "trainer", "--password-stdin", stdin="erin-password\n").returncode == 0
    assert authenticate(session, "erin", "erin-password") is not None
    assert workbench("set-role", "erin", "admin").returncode == 0
    assert workbench("disable", "dana").returncode == 0
    session.expire_all()
    assert authenticate(session, "dana", generated) is None

    listed = workbench("list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["id", "name", "role", "status", "created"]
    table = {cells[1]: cells[2:4] for cells in (row.split() for row in rows)}
    assert table == {"dana": ["labeler", "disabled"], "erin": ["admin", "enabled"]}

    assert workbench("enable", "dana").returncode == 0
    reset = workbench("reset-password", "dana", "--password-stdin", stdin="dana-new-password\n")
    assert reset.returncode == 0 and "password for" not in reset.stdout  # a given password is never echoed
    session.expire_all()
    assert authenticate(session, "dana", "dana-new-password") is not None


def test_cli_errors_are_one_clear_line_with_exit_status_2(workbench_env, session, capsys, monkeypatch):
    import io

    from web.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["users", "add", "frank", "--role", "admin", "--password-stdin"]) == 2  # empty stdin
    assert "stdin gave no password" in capsys.readouterr().err
    assert main(["users", "add", "frank", "--role", "admin"]) == 0
    capsys.readouterr()
    cases = [(["users", "add", "Frank", "--role", "labeler"], "already taken"),
             (["users", "set-role", "frank", "trainer"], "last enabled admin"),
             (["users", "disable", "frank"], "last enabled admin"),
             (["users", "disable", "nobody"], "does not exist"),
             (["users", "add", "bad name", "--role", "labeler"], "is not valid")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
    session.expire_all()
    assert [u.name for u in session.scalars(select(User))] == ["frank"]
    assert user_row(session, "frank").role == Role.admin
    with pytest.raises(SystemExit):  # argparse refuses an unknown role before anything runs
        main(["users", "set-role", "frank", "root"])


# ----------------------------------------------------------------------------- the Admin tab's handlers

@pytest.fixture
def admin_tab(api_settings, users):
    import gradio as gr

    from web.ui import admin_tab as module

    with gr.Blocks():
        return module.build(api_settings)


def as_user(name: str) -> SimpleNamespace:
    """What a handler reads from gr.Request: the logged-in user's name."""
    return SimpleNamespace(username=name)


def test_admin_tab_is_shown_to_admins_only_and_lists_the_users(admin_tab):
    page, table, picker = admin_tab.on_load(as_user(ADMIN[0]))
    assert page.visible is True
    assert set(table["name"]) == {ADMIN[0], TRAINER[0], LABELER[0]}
    assert list(table.columns) == ["id", "name", "role", "status", "created"]
    assert len(picker.choices) == 3
    for who in (TRAINER, LABELER):
        page, table, picker = admin_tab.on_load(as_user(who[0]))
        assert page.visible is False and table.empty and not picker.choices


def test_admin_tab_add_change_disable_reset(admin_tab, session):
    admin = as_user(ADMIN[0])
    message, table, _ = admin_tab.add("gina", "labeler", "", admin)
    assert "shown here once" in message and "gina" in set(table["name"])
    generated = message.split('id="admin-generated-password"')[1].split(">", 1)[1].split("</pre>")[0]
    assert authenticate(session, "gina", generated) is not None

    gina = user_row(session, "gina").id
    message, table, _ = admin_tab.set_role(gina, "trainer", admin)
    assert "now trainer" in message and table.set_index("name").loc["gina", "role"] == "trainer"
    message, table, picker = admin_tab.set_disabled(gina, True, admin)
    assert "cannot log in" in message and table.set_index("name").loc["gina", "status"] == "disabled"
    assert any("gina (trainer, disabled)" == label for label, _ in picker.choices)
    session.expire_all()
    assert authenticate(session, "gina", generated) is None
    admin_tab.set_disabled(gina, False, admin)
    message, _, _ = admin_tab.reset_password(gina, "gina-chosen-password", admin)
    assert "old one no longer works" in message and "gina-chosen-password" not in message
    session.expire_all()
    assert authenticate(session, "gina", "gina-chosen-password") is not None


def test_admin_tab_shows_refusals_and_bad_input_and_changes_nothing(admin_tab, session, users):
    message, _, _ = admin_tab.add("henry", "admin", "henry-password", as_user(LABELER[0]))
    assert "Not changed" in message and "manage users" in message
    message, _, _ = admin_tab.set_role(users["labeler"].id, "admin", as_user(TRAINER[0]))
    assert "manage users" in message
    message, _, _ = admin_tab.add("henry", "labeler", "short", as_user(ADMIN[0]))
    assert "at least 8 characters" in message
    message, _, _ = admin_tab.set_disabled(users["admin"].id, True, as_user(ADMIN[0]))
    assert "last enabled admin" in message
    message, _, _ = admin_tab.set_role(None, "trainer", as_user(ADMIN[0]))
    assert "choose a user first" in message
    session.expire_all()
    assert user_row(session, "henry") is None
    assert user_row(session, LABELER[0]).role == Role.labeler
    assert user_row(session, ADMIN[0]).disabled is False
