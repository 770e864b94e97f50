"""Fixtures of the browser tests: one `workbench serve` (or WORKBENCH_E2E_URL's server) and one headless
Chromium per test module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.browser import ADMIN_PASSWORD, CHROMIUM, CHROMIUM_ARGS, Server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    external = os.environ.get("WORKBENCH_E2E_URL")
    if external:
        yield type("External", (), {"url": external.rstrip("/") + "/",
                                    "password": os.environ.get("WORKBENCH_E2E_PASSWORD", ""), "log": lambda self: ""})()
        return
    root = tmp_path_factory.mktemp("ui-e2e")
    srv = Server(root / "data")
    srv.password = ADMIN_PASSWORD
    try:
        srv.wait_ready()
        yield srv
    finally:
        leftovers = srv.stop()
        assert not leftovers, f"processes left behind after the server stopped: {leftovers}"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set WORKBENCH_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


