"""What the app does when it starts and stops serving: the start-up heap is kept out of garbage collections
while it serves (`web.app.start_up_heap_frozen`) and given back afterwards."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from web.app import create_app


def test_the_start_up_heap_is_frozen_while_the_app_serves(api_settings):
    assert gc.get_freeze_count() == 0
    app = create_app(api_settings)
    with TestClient(app) as client:
        frozen = gc.get_freeze_count()
        # Everything alive at start-up: the app, its UI, the imported libraries (hundreds of thousands here).
        assert frozen > 10_000
        assert client.get("/api/health").status_code in (200, 503)
        gc.collect()  # a full collection leaves the frozen objects where they are (freed ones leave the count)
        assert gc.get_freeze_count() > 0.9 * frozen
    assert gc.get_freeze_count() == 0  # given back: a process done with this app can collect it
