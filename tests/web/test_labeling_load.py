"""The labeling benchmark's load, short (bench/bench_labeling.py runs it 60 s with 50 labelers): labelers
through the real web app process over HTTP, on SQLite and PostgreSQL. Counts are checked, not times."""

from __future__ import annotations

import pytest

from bench.bench_labeling import OVERLAP, measure


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgresql"], indirect=True)
def test_concurrent_labelers_lose_and_double_nothing(empty_database_url):
    result = measure(empty_database_url, labelers=8, seconds=4.0, think_s=(0.02, 0.1))
    assert result["error_count"] == 0, result["errors"]  # includes any retry not answered with the same label
    assert result["labels_acknowledged"] > 20  # the load did happen
    assert result["labels_stored"] == result["labels_acknowledged"] == result["counter_sum"]
    assert result["pairs_over_overlap"] == 0 and result["max_labels_on_a_pair"] <= OVERLAP


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_killing_the_web_app_mid_labeling_loses_no_label(empty_database_url, tmp_path):
    import signal

    import httpx

    from bench.bench_labeling import PASSWORD, AppProcess, label_for, populate, stored_counts

    # 300 pairs x overlap 2: more than 4 quick labelers can finish in 2 s, so a pair is still left to hold.
    project_id = populate(empty_database_url, labelers=4, prompts=100, answers=3)
    app = AppProcess(empty_database_url, tmp_path)
    try:
        app.wait_healthy()
        first = label_for(app.base_url, project_id, labelers=4, seconds=2.0, think_s=(0.01, 0.05))
        # A pair handed out but not yet labeled when the app dies.
        with httpx.Client(base_url=app.base_url, auth=("labeler0", PASSWORD), timeout=30) as client:
            held = client.get(f"/api/labeling/projects/{project_id}/next").json()
        app.process.send_signal(signal.SIGKILL)
        app.process.wait()
    finally:
        app.stop()
    assert not first["errors"] and first["created"] > 0
    assert stored_counts(empty_database_url)["stored"] == first["created"]

    again = AppProcess(empty_database_url, tmp_path)
    try:
        again.wait_healthy()
        with httpx.Client(base_url=again.base_url, auth=("labeler0", PASSWORD), timeout=30) as client:
            resumed = client.get(f"/api/labeling/projects/{project_id}/next").json()
            assert resumed["pair_id"] == held["pair_id"]  # the same pair, shown the same way
            assert resumed["left"] == held["left"]
            assert resumed["progress"]["done"] == held["progress"]["done"]
        second = label_for(again.base_url, project_id, labelers=4, seconds=2.0, think_s=(0.01, 0.05))
    finally:
        again.stop()
    counts = stored_counts(empty_database_url)
    assert not second["errors"]
    assert counts["stored"] == first["created"] + second["created"] == counts["counter_sum"]
