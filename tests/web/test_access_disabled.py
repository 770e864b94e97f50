"""A user disabled while their browser session is still open can do nothing through the services (the UI
asks `services.get_user` for the logged-in name; the account's open session must not keep its rights)."""

import pytest

from db.models import Role
from db.users import create_user
from web.services.access import Action, can, get_user, require
from web.services.common import PermissionDenied


def test_a_disabled_account_is_refused_everything(session):
    user = create_user(session, "leaving", "password-123", Role.admin)
    session.commit()
    assert can(get_user("leaving", session=session), Action.manage_users)
    user.disabled = True
    session.commit()
    shown = get_user("leaving", session=session)
    assert shown["disabled"] and not any(can(shown, action) for action in Action)
    assert not can(user, Action.chat)
    with pytest.raises(PermissionDenied, match="disabled"):
        require(shown, Action.chat)


def test_the_datasets_tab_shows_labelers_nothing(api_settings, users, session):
    import gradio as gr

    from tests.conftest import LABELER, TRAINER
    from tests.support.records import add_dataset
    from db.models import DatasetKind
    from web.ui.datasets_tab import build

    class FakeRequest:
        def __init__(self, username):
            self.username = username

    add_dataset(session, api_settings, DatasetKind.text, ['{"text": "a secret corpus"}'], "secret")
    with gr.Blocks():
        tab = build(api_settings)
    table, _note, picker, *_summary = tab.first_paint(FakeRequest(LABELER[0]))
    assert table.value["data"] == [] and picker.choices == []
    table, _note, picker, *_summary = tab.first_paint(FakeRequest(TRAINER[0]))
    assert [name for name, _ in picker.choices][0].endswith("secret") or "secret" in str(picker.choices)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_disabling_a_user_ends_their_open_ui_sessions(api_settings, users, session):
    # Two browsers of one labeler logged in to the UI (Gradio's cookie sessions); the account is disabled from
    # another process (here: straight in the database, as `workbench users disable` does): both sessions end.
    from fastapi.testclient import TestClient

    from db.users import user_named
    from tests.conftest import LABELER, TRAINER
    from web.app import create_app
    from web.auth import SessionsOfEnabledUsers

    app = create_app(api_settings)
    with TestClient(app) as first, TestClient(app) as second, TestClient(app) as colleague:
        for client, (name, password) in ((first, LABELER), (second, LABELER), (colleague, TRAINER)):
            assert client.post("/login", data={"username": name, "password": password}).json() == {"success": True}
            assert client.get("/gradio_api/user").json() == name
        user_named(session, LABELER[0]).disabled = True
        session.commit()
        deadline = SessionsOfEnabledUsers.RECHECK_SECONDS + 0.5
        import time

        time.sleep(deadline)
        for client in (first, second):
            assert client.get("/gradio_api/user").json() is None
            assert client.get("/gradio_api/login_check").status_code == 401
        assert colleague.get("/gradio_api/user").json() == TRAINER[0]  # nobody else is logged out
        # Enabled again, the old cookie stays dead: a new login is needed.
        user_named(session, LABELER[0]).disabled = False
        session.commit()
        time.sleep(deadline)
        assert first.get("/gradio_api/user").json() is None
