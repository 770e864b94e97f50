"""Cross-site requests (CORS, foreign-origin writes, cookie flags) and login throttling, through the
real app (FastAPI + mounted Gradio) on a real database; the throttle's timing rules with a fake clock."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import uuid4

import bcrypt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from db.models import Job
from db.settings import Settings, get_settings
from tests.conftest import ADMIN, TRAINER
from web.app import create_app
from web.login_throttle import (FIRST_LOCKOUT_SECONDS, MAX_FREE_FAILURES, MAX_LOCKOUT_SECONDS, LoginThrottle,
                                LoginThrottled)

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

HOST = "https://workbench.example.com"  # a real host name: Gradio's own CORS trusts only localhost-to-localhost
EVIL = "https://evil.example"


@pytest.fixture
def app_client(api_settings: Settings, users: dict):
    settings = dataclasses.replace(api_settings, public_hosts=("workbench.example.com",))
    with TestClient(create_app(settings), base_url=HOST) as test_client:
        yield test_client


def job_count(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Job))


def tiny_job() -> dict:
    return {"kind": "pretrain", "params": {"dataset_id": 1}}


# ----------------------------------------------------------------------------- CORS


@SQLITE_ONLY
def test_foreign_origin_gets_no_cors_grant_on_api_or_ui(app_client: TestClient):
    for path in ("/api/health", "/config", "/gradio_api/info"):
        answer = app_client.get(path, headers={"Origin": EVIL})
        assert "access-control-allow-origin" not in answer.headers, path
    preflight = app_client.options("/gradio_api/queue/join", headers={
        "Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert preflight.headers.get("access-control-allow-origin") is None


@SQLITE_ONLY
def test_configured_origin_is_granted(api_settings: Settings, users: dict, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WORKBENCH_ALLOWED_ORIGINS", "https://tools.example.com")
    with TestClient(create_app(get_settings()), base_url=HOST) as client:
        answer = client.get("/api/health", headers={"Origin": "https://tools.example.com"})
        assert answer.headers["access-control-allow-origin"] == "https://tools.example.com"
        assert answer.headers["access-control-allow-credentials"] == "true"
        login = client.post("/login", headers={"Origin": "https://tools.example.com"},
                            data={"username": TRAINER[0], "password": TRAINER[1]})
        assert login.json() == {"success": True}


# ----------------------------------------------------------------------------- cross-site writes


@SQLITE_ONLY
def test_cross_site_writes_are_refused_everywhere(app_client: TestClient, session):
    before = job_count(session)
    refused = [
        app_client.post("/api/jobs", auth=TRAINER, json=tiny_job(), headers={"Origin": EVIL}),
        app_client.post("/api/jobs", auth=TRAINER, json=tiny_job(), headers={"Referer": f"{EVIL}/page"}),
        app_client.post("/api/jobs", auth=TRAINER, json=tiny_job(), headers={"Origin": "null"}),
        app_client.post("/api/datasets", auth=TRAINER, headers={"Origin": EVIL},
                        files={"file": ("a.txt", b"hello world\n" * 10, "text/plain")}, data={"name": "x"}),
        app_client.post("/login", headers={"Origin": EVIL}, data={"username": TRAINER[0], "password": TRAINER[1]}),
        app_client.post("/gradio_api/queue/join", headers={"Origin": EVIL}, json={}),
        # Same host name, another port: another origin.
        app_client.post("/api/jobs", auth=TRAINER, json=tiny_job(), headers={"Origin": f"{HOST}:8443"}),
    ]
    for answer in refused:
        assert answer.status_code == 403, answer.request.url
        assert "cross-site request refused" in answer.json()["detail"]
        assert "set-cookie" not in answer.headers
    assert job_count(session) == before


@SQLITE_ONLY
def test_a_rebound_domain_is_not_the_app(api_settings: Settings, users: dict, session):
    # DNS rebinding: evil.example resolves to this machine, so its page's requests carry Host: evil.example and
    # Origin: https://evil.example, the same origin by the Host header. Only the app's public names count.
    before = job_count(session)
    with TestClient(create_app(api_settings), base_url=EVIL) as rebound:
        answer = rebound.post("/api/jobs", auth=TRAINER, json=tiny_job(), headers={"Origin": EVIL})
        login = rebound.post("/login", headers={"Origin": EVIL}, data={"username": TRAINER[0], "password": TRAINER[1]})
    assert answer.status_code == 403 and "WORKBENCH_PUBLIC_HOSTS" in answer.json()["detail"]
    assert login.status_code == 403
    assert job_count(session) == before
    # The default public names are this machine's: a page served from 127.0.0.1 is the app.
    assert "127.0.0.1" in api_settings.public_hosts and "localhost" in api_settings.public_hosts
    with TestClient(create_app(api_settings), base_url="http://127.0.0.1:7860") as local:
        ok = local.post("/login", headers={"Origin": "http://127.0.0.1:7860"},
                        data={"username": TRAINER[0], "password": TRAINER[1]})
    assert ok.json() == {"success": True}


@SQLITE_ONLY
def test_no_other_site_may_frame_the_app(app_client: TestClient):
    for path in ("/", "/api/health", "/config"):
        answer = app_client.get(path)
        assert answer.headers["content-security-policy"] == "frame-ancestors 'self'", path
        assert answer.headers["x-frame-options"] == "SAMEORIGIN", path


def test_public_hosts_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WORKBENCH_PUBLIC_HOSTS", "Workbench.Example.com, 10.0.0.5")
    assert get_settings().public_hosts == ("workbench.example.com", "10.0.0.5")
    monkeypatch.setenv("WORKBENCH_PUBLIC_HOSTS", "https://workbench.example.com:443")
    with pytest.raises(ValueError, match="WORKBENCH_PUBLIC_HOSTS"):
        get_settings()


@SQLITE_ONLY
def test_same_origin_and_scripts_still_work(app_client: TestClient):
    # A browser page of the app itself sends its own origin (default port written or not).
    for origin in (HOST, f"{HOST}:443"):
        login = app_client.post("/login", headers={"Origin": origin},
                                data={"username": TRAINER[0], "password": TRAINER[1]})
        assert login.json() == {"success": True}, origin
    # Scripts send no Origin at all; a wrong body is then judged on its merits (422), not refused.
    answer = app_client.post("/api/jobs", auth=TRAINER, json={"kind": "nope", "params": {}})
    assert answer.status_code == 422


@SQLITE_ONLY
def test_login_cookies_are_same_site_lax_and_secure_on_https(api_settings: Settings, users: dict):
    with TestClient(create_app(api_settings), base_url="http://workbench.internal") as client:
        plain = client.post("/login", data={"username": TRAINER[0], "password": TRAINER[1]})
        cookies = plain.headers.get_list("set-cookie")
        assert cookies and all("samesite=lax" in c.lower() and "samesite=none" not in c.lower() for c in cookies)
        # Behind a TLS proxy: every cookie Secure.
        proxied = client.post("/login", headers={"X-Forwarded-Proto": "https"},
                              data={"username": TRAINER[0], "password": TRAINER[1]})
        cookies = proxied.headers.get_list("set-cookie")
        assert cookies and all("; secure" in c.lower() and "samesite=lax" in c.lower() for c in cookies)


def logged_in(client: TestClient) -> TestClient:
    login = client.post("/login", data={"username": TRAINER[0], "password": TRAINER[1]})
    assert login.json() == {"success": True}
    assert client.get("/config").status_code == 200  # the UI answers this session
    return client


@SQLITE_ONLY
@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "image"},     # <img src=".../logout"> on another site
    {"Sec-Fetch-Site": "cross-site", "Referer": f"{EVIL}/page"},      # a link there, followed
    {"Sec-Fetch-Site": "same-site", "Referer": "https://blog.example.com/"},  # a sibling host: another origin
    {"Referer": f"{EVIL}/page"},                                      # a browser without Sec-Fetch-* headers
])
def test_a_logout_sent_by_another_site_is_refused(app_client: TestClient, headers: dict):
    client = logged_in(app_client)
    refused = client.get("/logout", headers=headers, follow_redirects=False)
    assert refused.status_code == 403, refused.text
    assert "cross-site request refused" in refused.json()["detail"] and "set-cookie" not in refused.headers
    assert client.get("/config").status_code == 200  # still logged in


@SQLITE_ONLY
@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "same-origin", "Referer": f"{HOST}/"},  # the app's own "log out" link
    {"Sec-Fetch-Site": "none"},                                # typed into the address bar
    {},                                                        # a script
])
def test_the_apps_own_logout_still_logs_out(app_client: TestClient, headers: dict):
    client = logged_in(app_client)
    answer = client.get("/logout", headers=headers, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    assert client.get("/config").status_code == 401  # the session is gone


@SQLITE_ONLY
def test_gradios_own_upload_route_needs_a_login(app_client: TestClient):
    from gradio.utils import get_upload_folder

    def uploaded(name: str) -> list:
        return list(Path(get_upload_folder()).rglob(name))

    name = f"probe-{uuid4().hex}.txt"
    anonymous = app_client.post("/gradio_api/upload", files={"files": (name, b"hello", "text/plain")})
    assert anonymous.status_code == 401, anonymous.text
    assert uploaded(name) == []  # nothing stored for a caller who is nobody
    client = logged_in(app_client)
    accepted = client.post("/gradio_api/upload", files={"files": (name, b"hello", "text/plain")})
    assert accepted.status_code == 200 and accepted.json()[0].endswith(name), accepted.text
    for path in uploaded(name):
        path.unlink()


# ----------------------------------------------------------------------------- login throttling


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts bcrypt password checks (the expensive part of a login)."""
    calls: list[int] = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(1)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting_checkpw)
    return calls


@SQLITE_ONLY
def test_parallel_wrong_passwords_are_throttled_without_bcrypt(app_client: TestClient, bcrypt_calls: list[int],
                                                                api_settings: Settings, caplog):
    def guess(i: int):
        return app_client.get("/api/jobs", auth=(ADMIN[0], f"guess-{i}"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(guess, range(40)))
    statuses = [a.status_code for a in answers]
    assert statuses.count(401) == MAX_FREE_FAILURES
    assert statuses.count(429) == 40 - MAX_FREE_FAILURES
    assert len(bcrypt_calls) == MAX_FREE_FAILURES
    throttled = next(a for a in answers if a.status_code == 429)
    assert 1 <= int(throttled.headers["Retry-After"]) <= FIRST_LOCKOUT_SECONDS
    assert "too many failed logins" in throttled.json()["detail"]
    assert any("login throttled" in r.message and ADMIN[0] in r.message and "testclient" in r.message
               for r in caplog.records)

    # The right password from the same address is refused too (it is not even checked).
    assert app_client.get("/api/jobs", auth=ADMIN).status_code == 429
    assert len(bcrypt_calls) == MAX_FREE_FAILURES
    # Another account from another address is untouched.
    with TestClient(app_client.app, base_url=HOST, client=("10.0.0.8", 4000)) as other:
        assert other.get("/api/jobs", auth=TRAINER).status_code == 200
        # The attacked account is locked for addresses that never logged in to it...
        assert other.get("/api/jobs", auth=ADMIN).status_code == 429


@SQLITE_ONLY
def test_an_address_that_logged_in_before_is_not_locked_out_of_its_account(app_client: TestClient):
    with TestClient(app_client.app, base_url=HOST, client=("10.0.0.7", 4000)) as admins_machine:
        assert admins_machine.get("/api/jobs", auth=ADMIN).status_code == 200
        with TestClient(app_client.app, base_url=HOST, client=("10.6.6.6", 4000)) as attacker:
            statuses = [attacker.get("/api/jobs", auth=(ADMIN[0], f"guess-{i}")).status_code for i in range(10)]
            assert statuses[-1] == 429
        # ...but the admin's own machine keeps working.
        assert admins_machine.get("/api/jobs", auth=ADMIN).status_code == 200


@SQLITE_ONLY
def test_a_success_resets_the_account(app_client: TestClient):
    for _round in range(3):
        for i in range(MAX_FREE_FAILURES - 1):
            assert app_client.get("/api/jobs", auth=(TRAINER[0], f"typo-{i}")).status_code == 401
        assert app_client.get("/api/jobs", auth=TRAINER).status_code == 200


def test_the_owners_logins_give_an_attacker_on_other_addresses_no_more_guesses():
    # An attacker rotating addresses while the real user keeps logging in: the owner's success takes back only
    # the owner's own typos, so the attacker's failures add up to the lockout as if the owner never came.
    now = [0.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    with throttle.attempt("victim", "10.0.0.7") as owner:  # the owner's usual machine, known to the account
        owner.done(True)
    guesses = 0
    for round_ in range(3):
        for i in range(MAX_FREE_FAILURES):
            try:
                throttle.check("victim", f"10.6.{round_}.{i}")
            except LoginThrottled:
                continue
            with throttle.attempt("victim", f"10.6.{round_}.{i}") as attempt:
                attempt.done(False)
                guesses += 1
        with throttle.attempt("victim", "10.0.0.7") as owner:  # the owner's machine: a typo, then success
            owner.done(False)
        with throttle.attempt("victim", "10.0.0.7") as owner:
            owner.done(True)
        now[0] += 1.0
    assert guesses == MAX_FREE_FAILURES  # not 3 x MAX_FREE_FAILURES
    throttle.check("victim", "10.0.0.7")  # the owner's known address still gets in
    with pytest.raises(LoginThrottled):
        throttle.check("victim", "10.9.9.9")
    # Failures expire with time only.
    now[0] += 15 * 60 + MAX_LOCKOUT_SECONDS + 1
    throttle.check("victim", "10.9.9.9")


@SQLITE_ONLY
def test_login_form_is_throttled_with_429(app_client: TestClient, bcrypt_calls: list[int]):
    answers = [app_client.post("/login", data={"username": TRAINER[0], "password": f"guess-{i}"})
               for i in range(MAX_FREE_FAILURES + 3)]
    assert [a.status_code for a in answers] == [400] * MAX_FREE_FAILURES + [429] * 3
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert len(bcrypt_calls) == MAX_FREE_FAILURES


def test_lockout_grows_and_is_capped():
    now = [0.0]
    throttle = LoginThrottle(clock=lambda: now[0])

    def fail() -> None:
        throttle.check("admin", "10.0.0.1")
        with throttle.attempt("admin", "10.0.0.1") as attempt:
            attempt.done(False)

    for _ in range(MAX_FREE_FAILURES):
        fail()
    waits = []
    for _ in range(12):
        with pytest.raises(LoginThrottled) as locked:
            throttle.check("admin", "10.0.0.1")
        waits.append(locked.value.retry_after)
        now[0] += locked.value.retry_after  # wait it out, then fail once more
        fail()
    assert waits[0] == FIRST_LOCKOUT_SECONDS
    assert all(later >= earlier for earlier, later in zip(waits, waits[1:]))
    assert waits[1] == 2 * waits[0] and max(waits) == MAX_LOCKOUT_SECONDS
    # Forgotten after a quiet spell: the right password works again and clears the count.
    now[0] += 2 * MAX_LOCKOUT_SECONDS + 15 * 60
    throttle.check("admin", "10.0.0.1")


def test_a_team_behind_one_address_logging_in_at_once_is_not_locked_out():
    # Eight people of one office (one address) log in at the same moment with their right passwords: none
    # may be refused. Counting checks still running as failures of the address locked out the sixth.
    # The eight checks are held open at once (nested, in one thread: accounts on distinct lock stripes).
    from contextlib import ExitStack

    from web.login_throttle import LoginThrottle

    throttle = LoginThrottle()
    names, stripes = [], set()
    for number in range(1000):
        name = f"labeler{number}"
        if hash(name) % LoginThrottle.STRIPES not in stripes:
            stripes.add(hash(name) % LoginThrottle.STRIPES)
            names.append(name)
        if len(names) == 8:
            break
    with ExitStack() as stack:
        attempts = [stack.enter_context(throttle.attempt(name, "10.0.0.7")) for name in names]
        for attempt in attempts:
            attempt.done(True)
    throttle.check("someone-else", "10.0.0.7")  # and the address is not locked afterwards
