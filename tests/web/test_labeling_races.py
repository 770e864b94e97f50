"""Labels, retries and undos racing each other (web/services/labeling.py) on SQLite and PostgreSQL: whatever the
interleaving, a pair's `label_count` equals its labels, no pair has more labels than the overlap, and every
request is answered with a label, a pair or a refusal (409), never an error.

The schedules are random but seeded (one test per seed), so a failure names the seed that shows it: each labeler
works through its own list of moves in its own thread, and some moves are two requests sent at once by the same
labeler (a double click on Undo, a retried label racing an undo of it).
"""

from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import func, select

from db.models import Comparison, LabelingPair, Role, UndoneLabelKey
from db.session import SessionLocal
from db.users import create_user
from llm.preference_labels import Label
from tests.support.records import make_generate_job
from web.services.common import Conflict
from web.services.labeling import create_project, next_pair, submit_label, undo_last_label

MOVES = ("label", "label", "label", "skip", "retry", "undo", "double_undo", "retry_and_undo", "label_and_retry")


def counts_and_rows(session, project_id: int) -> list[tuple[int, int, int]]:
    """(pair id, label_count, non-skip labels stored) of every pair of the project."""
    labels = (select(func.count(Comparison.id)).where(Comparison.pair_id == LabelingPair.id,
                                                      Comparison.label != Label.skip).scalar_subquery())
    return [tuple(row) for row in session.execute(
        select(LabelingPair.id, LabelingPair.label_count, labels).where(LabelingPair.project_id == project_id)
        .order_by(LabelingPair.id))]


class Labeler:
    """One labeler's moves, each request in a session of its own (as each HTTP request has)."""

    def __init__(self, database_url: str, user_id: int, project_id: int, rng: random.Random, errors: list):
        self.database_url, self.user_id, self.project_id = database_url, user_id, project_id
        self.rng, self.errors = rng, errors
        self.last_request: dict | None = None  # the last label sent, to send again as a retry would

    def request(self, call, *args, **kwargs):
        session = SessionLocal(self.database_url)
        try:
            return call(session, self.user_id, self.project_id, *args, **kwargs)
        except Conflict:
            return None  # a refusal that stores nothing: allowed
        except Exception as error:  # noqa: BLE001 - every other failure is reported by the test
            self.errors.append(f"{call.__name__}: {type(error).__name__}: {error}")
            return None
        finally:
            session.close()

    def at_once(self, *calls) -> None:
        threads = [threading.Thread(target=self.request, args=call) for call in calls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    def label(self, choice: str) -> None:
        shown = self.request(next_pair)
        if shown is None:
            return
        self.last_request = {"pair_id": shown["pair_id"], "choice": choice,
                             "left_answer_id": shown["left"]["answer_id"],
                             "idempotency_key": f"{self.user_id}-{self.rng.getrandbits(64):x}"}
        self.request(submit_label, **self.last_request, and_next=self.rng.random() < 0.5)

    def retry_call(self) -> tuple:
        return (submit_label, *self.last_request.values())

    def move(self, move: str) -> None:
        if move in ("label", "skip"):
            self.label(self.rng.choice(("left", "right", "tie", "both_bad")) if move == "label" else "skip")
        elif move == "undo":
            self.request(undo_last_label)
        elif move == "double_undo":  # Undo clicked twice
            self.at_once((undo_last_label,), (undo_last_label,))
        elif self.last_request is None:
            self.label("left")
        elif move == "retry":
            self.request(*self.retry_call())
        elif move == "retry_and_undo":  # a label's retry arriving while the labeler undoes it
            self.at_once(self.retry_call(), (undo_last_label,))
        elif move == "label_and_retry":  # a label and its retry in flight together
            self.label("left")
            self.at_once(self.retry_call(), self.retry_call())

    def run(self, moves: list[str]) -> None:
        for move in moves:
            self.move(move)


@pytest.mark.parametrize("seed", range(3))
def test_counts_equal_labels_under_concurrent_labels_retries_and_undos(session, database_url, seed):
    job = make_generate_job(session, prompts=3, answers=3)  # 9 pairs
    project = create_project(session, None, name="race", source_job_ids=[job.id], overlap=2)
    users = [create_user(session, f"racer{i}", "password-123", Role.labeler) for i in range(4)]
    session.commit()
    rng = random.Random(seed)
    errors: list[str] = []
    labelers = [Labeler(database_url, user.id, project.id, random.Random(rng.getrandbits(32)), errors)
                for user in users]
    threads = [threading.Thread(target=labeler.run, args=([rng.choice(MOVES) for _ in range(30)],))
               for labeler in labelers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    session.expire_all()
    pairs = counts_and_rows(session, project.id)
    assert [(pair, count) for pair, count, labels in pairs if count != labels] == [], pairs
    assert all(labels <= project.overlap for _, _, labels in pairs), pairs
    assert sum(labels for _, _, labels in pairs) > 0  # the schedule did label
    # No label that was undone came back with a retry of its request.
    assert session.scalar(select(func.count()).select_from(Comparison).join(
        UndoneLabelKey, UndoneLabelKey.idempotency_key == Comparison.idempotency_key)) == 0
    assert not errors, errors
