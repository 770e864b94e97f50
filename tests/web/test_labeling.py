"""Labeling projects (web/services/labeling.py, labeling_results.py) on SQLite and PostgreSQL: pair forming,
the queue, the overlap guard under concurrent labelers, idempotent labels, undo, agreement and exports."""

from __future__ import annotations

import csv
import io
import json
import threading

import pytest
from sqlalchemy import event, func, select

from db.models import Comparison, Completion, JobStatus, LabelingPair, Role
from db.session import SessionLocal
from db.users import create_user
from tests.support.records import make_generate_job, shown_id
from web.services.common import Conflict, InvalidInput, PermissionDenied
from web.services.labeling import (create_project, form_pairs, list_projects, next_pair, progress, submit_label,
                                   undo_last_label)
from web.services.labeling_results import agreement_report, consensus_pairs, export_labels_csv, export_trl_jsonl


@pytest.fixture
def team(session):
    return {name: create_user(session, name, "password-123", role)
            for name, role in [("boss", Role.admin), ("tina", Role.trainer), ("lea", Role.labeler),
                               ("leo", Role.labeler), ("lou", Role.labeler)]}


def test_pairs_are_every_two_answers_or_a_seeded_sample():
    by_prompt = {1: [10, 11, 12], 2: [20, 21]}
    assert form_pairs(by_prompt, "all", None, 0) == [(1, 10, 11), (1, 10, 12), (1, 11, 12), (2, 20, 21)]
    sampled = form_pairs(by_prompt, "random", 1, seed=3)
    assert len(sampled) == 2 and sampled == form_pairs(by_prompt, "random", 1, seed=3)
    assert {p for p, _, _ in sampled} == {1, 2}


def test_a_project_is_checked_and_stored_whole(session, team):
    job = make_generate_job(session)
    with pytest.raises(PermissionDenied):
        create_project(session, team["lea"], name="x", source_job_ids=[job.id])
    with pytest.raises(InvalidInput, match="overlap"):
        create_project(session, team["tina"], name="x", source_job_ids=[job.id], overlap=0)
    running = make_generate_job(session, status=JobStatus.running)
    with pytest.raises(InvalidInput, match="running"):
        create_project(session, team["tina"], name="x", source_job_ids=[running.id])
    single = make_generate_job(session, answers=1)
    with pytest.raises(InvalidInput, match="fewer than two"):
        create_project(session, team["tina"], name="x", source_job_ids=[single.id])
    assert session.scalar(select(func.count(LabelingPair.id))) == 0  # nothing stored by the refusals
    project = create_project(session, team["tina"], name="helpful?", source_job_ids=[job.id], overlap=2)
    assert session.scalar(select(func.count(LabelingPair.id))) == 3 * 3  # 3 prompts x C(3, 2)
    assert [p["name"] for p in list_projects(team["lea"], session=session)] == ["helpful?"]
    named = create_project(session, team["boss"], name="only leo", source_job_ids=[job.id], labeler_ids=[team["leo"].id])
    assert [p["id"] for p in list_projects(team["lea"], session=session)] == [project.id]
    with pytest.raises(PermissionDenied):
        next_pair(session, team["lea"], named.id)


def test_labels_are_unswapped_idempotent_and_undoable(session, team):
    job = make_generate_job(session, prompts=2, answers=2)
    project = create_project(session, team["tina"], name="p", source_job_ids=[job.id], overlap=1)
    lea = team["lea"]
    shown = next_pair(session, lea, project.id)
    assert next_pair(session, lea, project.id)["pair_id"] == shown["pair_id"]  # a refresh shows the same pair
    pair = session.get(LabelingPair, shown["pair_id"])
    left = shown["left"]["answer_id"]
    # The screen names answers by opaque ids, not by the completions' database ids.
    assert {left, shown["right"]["answer_id"]} == {shown_id(session, pair, pair.completion_a_id),
                                                   shown_id(session, pair, pair.completion_b_id)}
    assert not {left, shown["right"]["answer_id"]} & {str(pair.completion_a_id), str(pair.completion_b_id)}
    stored = submit_label(session, lea, project.id, pair.id, "left", left, note="clearer", idempotency_key="k1")
    # "left" means the completion shown on the left won, whichever of a/b it is.
    assert stored["label"] == ("a" if left == shown_id(session, pair, pair.completion_a_id) else "b")
    assert stored["swapped"] == (left == shown_id(session, pair, pair.completion_b_id))
    again = submit_label(session, lea, project.id, pair.id, "left", left, idempotency_key="k1")
    assert again["duplicate"] and again["id"] == stored["id"]
    assert submit_label(session, lea, project.id, pair.id, "right", left)["id"] == stored["id"]  # one per labeler
    assert session.scalar(select(func.count(Comparison.id))) == 1
    session.refresh(pair)
    assert pair.label_count == 1
    # The pair has its one label: nobody else gets it, and a late label is refused with nothing stored.
    other = next_pair(session, team["leo"], project.id)
    assert other["pair_id"] != pair.id
    with pytest.raises(Conflict, match="already has its 1 label"):
        submit_label(session, team["leo"], project.id, pair.id, "tie", left)
    # leo holds the other pair but has not labeled it: it still counts as left for lea.
    assert progress(session, lea, project.id) == {"done": 1, "skipped": 0, "today": 1, "left": 1, "pairs": 2,
                                                  "complete_pairs": 1}
    # Undo: the label goes, the count drops, the same pair comes back shown the same way.
    back = undo_last_label(session, lea, project.id)
    assert back["pair_id"] == pair.id and back["left"]["answer_id"] == left
    session.refresh(pair)
    assert pair.label_count == 0 and session.scalar(select(func.count(Comparison.id))) == 0
    # A late retry of the undone label's request (its key) stores nothing: the labeler took that label back.
    with pytest.raises(Conflict, match="was undone; nothing is stored"):
        submit_label(session, lea, project.id, pair.id, "left", left, idempotency_key="k1")
    session.refresh(pair)
    assert pair.label_count == 0 and session.scalar(select(func.count(Comparison.id))) == 0
    with pytest.raises(InvalidInput, match="choice"):
        submit_label(session, lea, project.id, pair.id, "A", left)
    for not_shown in (str(pair.completion_a_id), other["left"]["answer_id"]):  # a database id; another pair's
        with pytest.raises(InvalidInput, match="not one of pair") as refused:
            submit_label(session, lea, project.id, pair.id, "left", not_shown)
        assert refused.value.field == "left_answer_id"
    # A retried skip stores one skip; a key already used for another label is refused, and its overlap guard's
    # count rolls back with it.
    skip = submit_label(session, lea, project.id, pair.id, "skip", left, idempotency_key="k2")
    assert submit_label(session, lea, project.id, pair.id, "skip", left)["id"] == skip["id"]
    with pytest.raises(Conflict, match="idempotency key was used for another label"):
        submit_label(session, team["leo"], project.id, other["pair_id"], "tie", other["left"]["answer_id"],
                     idempotency_key="k2")
    assert session.scalar(select(func.count(Comparison.id))) == 1
    assert session.get(LabelingPair, other["pair_id"]).label_count == 0


def test_a_label_can_bring_the_next_pair(session, team):
    job = make_generate_job(session, prompts=2, answers=2)  # 2 pairs
    project = create_project(session, team["tina"], name="p", source_job_ids=[job.id], overlap=1)
    lea = team["lea"]
    shown = next_pair(session, lea, project.id)
    stored = submit_label(session, lea, project.id, shown["pair_id"], "left", shown["left"]["answer_id"],
                          idempotency_key="k1", and_next=True)
    following = stored["next"]
    assert not stored["duplicate"] and following["pair_id"] != shown["pair_id"]
    # It is handed out as GET next would: held for lea (the same pair and sides again), counted once.
    assert next_pair(session, lea, project.id) == following
    assert stored["progress"] == following["progress"] == progress(session, lea, project.id) == {
        "done": 1, "skipped": 0, "today": 1, "left": 1, "pairs": 2, "complete_pairs": 1}
    # A retry gets the stored label and the same next pair, not a third one.
    again = submit_label(session, lea, project.id, shown["pair_id"], "left", shown["left"]["answer_id"],
                         idempotency_key="k1", and_next=True)
    assert again["duplicate"] and again["id"] == stored["id"] and again["next"] == following
    # After the last pair: next is None, and the progress is still there.
    last = submit_label(session, lea, project.id, following["pair_id"], "tie", following["left"]["answer_id"],
                        and_next=True)
    assert last["next"] is None and last["progress"]["done"] == 2 and last["progress"]["left"] == 0
    assert "next" not in submit_label(session, lea, project.id, following["pair_id"], "tie",
                                      following["left"]["answer_id"])


def test_skip_takes_no_slot_and_never_comes_back(session, team):
    job = make_generate_job(session, prompts=1, answers=2)
    project = create_project(session, team["tina"], name="p", source_job_ids=[job.id], overlap=1)
    shown = next_pair(session, team["lea"], project.id)
    submit_label(session, team["lea"], project.id, shown["pair_id"], "skip", shown["left"]["answer_id"])
    assert next_pair(session, team["lea"], project.id) is None
    assert next_pair(session, team["leo"], project.id)["pair_id"] == shown["pair_id"]


def test_concurrent_labelers_never_exceed_the_overlap(session, team, database_url):
    job = make_generate_job(session, prompts=4, answers=3)  # 12 pairs
    project = create_project(session, team["tina"], name="p", source_job_ids=[job.id], overlap=2)
    labelers = [create_user(session, f"crowd{i}", "password-123", Role.labeler) for i in range(6)]
    session.commit()  # the labelers' own sessions must see them
    errors = []

    def label_everything(user_id):
        own = SessionLocal(database_url)
        try:
            while True:
                shown = next_pair(own, user_id, project.id)
                if shown is None:
                    return
                try:
                    submit_label(own, user_id, project.id, shown["pair_id"], "left", shown["left"]["answer_id"])
                except Conflict:
                    pass  # refused without storing: allowed, the guard's job
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            own.close()

    threads = [threading.Thread(target=label_everything, args=(user.id,)) for user in labelers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    # A labeler still running would leave its pair short below: say so instead (a lock wait, not the guard).
    assert not [thread.name for thread in threads if thread.is_alive()], "labelers still running after 120 s"
    session.expire_all()
    counts = session.execute(select(Comparison.pair_id, func.count(Comparison.id)).group_by(Comparison.pair_id)).all()
    assert len(counts) == 12 and all(count == 2 for _, count in counts), sorted(counts)  # each exactly at its overlap
    assert all(pair.label_count == 2 for pair in session.scalars(select(LabelingPair)))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_pair_locked_a_moment_by_another_labelers_request_is_still_handed_out(session, team, database_url):
    """PostgreSQL's take passes by a pair another request holds locked while it takes it (skip_locked); the labeler
    asking then must not be told that nothing is left (they would stop labeling), but get it once it is free."""
    job = make_generate_job(session, prompts=1, answers=2)  # one pair
    project = create_project(session, team["tina"], name="p", source_job_ids=[job.id], overlap=1)
    pair_id = session.scalar(select(LabelingPair.id).where(LabelingPair.project_id == project.id))
    other = SessionLocal(database_url)
    other.execute(select(LabelingPair.id).where(LabelingPair.id == pair_id).with_for_update())
    release = threading.Timer(0.2, other.rollback)  # that request ends without keeping the pair
    release.start()
    try:
        shown = next_pair(session, team["lea"], project.id)
    finally:
        release.join()
        other.close()
    assert shown is not None and shown["pair_id"] == pair_id


def test_agreement_consensus_and_exports_follow_the_labels(session, team):
    job = make_generate_job(session, prompts=3, answers=2)  # 3 pairs
    project = create_project(session, team["tina"], name="p", source_job_ids=[job.id], overlap=2)
    pairs = list(session.scalars(select(LabelingPair).order_by(LabelingPair.id)))
    # lea and leo: both pick completion_a on pair 0, disagree on pair 1, both say tie on pair 2.
    wanted = {"lea": ["a", "a", "tie"], "leo": ["a", "b", "tie"]}
    for name, labels in wanted.items():
        for pair, label in zip(pairs, labels):
            shown_left = shown_id(session, pair, pair.completion_a_id)
            choice = {"a": "left", "b": "right"}.get(label, label)
            submit_label(session, team[name], project.id, pair.id, choice, shown_left)
    report = agreement_report(project.id, team["boss"], session=session)
    assert report["labels"] == 6 and report["labelers"] == {"lea": 3, "leo": 3}
    assert report["percent_agreement"] == pytest.approx(2 / 3)
    assert [d["pair_id"] for d in report["disagreements"]] == [pairs[1].id]
    assert report["consensus"] == {"pairs": 1, "tie": 1, "both_bad": 0, "no_majority": 1, "too_few_labels": 0}
    with pytest.raises(PermissionDenied):
        agreement_report(project.id, team["lea"], session=session)
    lines = [json.loads(line) for line in export_trl_jsonl(project.id, team["tina"], session=session).splitlines()]
    a_text = session.get(Completion, pairs[0].completion_a_id).text
    b_text = session.get(Completion, pairs[0].completion_b_id).text
    assert lines == [{"prompt": [{"role": "user", "content": "question 0?"}],
                      "chosen": [{"role": "assistant", "content": a_text}],
                      "rejected": [{"role": "assistant", "content": b_text}]}]
    assert len(consensus_pairs(project.id, team["tina"], min_labels=3, session=session)) == 0
    rows = list(csv.DictReader(io.StringIO(export_labels_csv(project.id, team["boss"], session=session))))
    assert len(rows) == 6 and {row["labeler"] for row in rows} == {"lea", "leo"}


def test_the_export_gives_exactly_the_pairs_a_preference_job_trains_on(session, team, tmp_path):
    """One consensus rule: a project's TRL export and a reward/DPO job's snapshot of it hold the same pairs,
    pair for pair (prompt, chosen, rejected, order), whatever mix of labels the project has."""
    from llm.chat_data import read_preference
    from worker.jobs.preference_pairs import PAIRS_FILE, snapshot_pairs

    chat_job, text_job = make_generate_job(session, prompts=2, answers=3), make_generate_job(session, chat=False)
    project = create_project(session, team["tina"], name="mix", source_job_ids=[chat_job.id, text_job.id], overlap=3)
    pairs = list(session.scalars(select(LabelingPair).where(LabelingPair.project_id == project.id)
                                 .order_by(LabelingPair.id)))
    # Stored (un-swapped) labels per pair, by labeler; each labeler is shown the pair the other way round
    # than the one before, so "left" and "right" map to a and b both ways.
    plan = [{"lea": "a", "leo": "a", "lou": "a"},                 # a
            {"lea": "b", "leo": "b", "lou": "a"},                 # b, with a dissent
            {"lea": "tie", "leo": "tie", "lou": "a"},             # a tie: no pair
            {"lea": "both_bad", "leo": "both_bad", "lou": "both_bad"},  # both bad: no pair
            {"lea": "a", "leo": "b", "lou": "tie"},               # no majority
            {"lea": "skip", "leo": "a", "lou": "a", "tina": "b"},  # a skip is no label: a by 2 of 3
            {"lea": "a", "leo": "a"},                             # too few labels yet
            {"lea": "b", "lou": "b", "boss": "b"},                # b, in a text prompt
            {}]                                                   # unlabeled
    assert len(pairs) >= len(plan)
    for index, (pair, labels) in enumerate(zip(pairs, plan)):
        for turn, (name, label) in enumerate(labels.items()):
            swapped = (index + turn) % 2 == 1
            left = pair.completion_b_id if swapped else pair.completion_a_id
            choice = {"a": "right" if swapped else "left", "b": "left" if swapped else "right"}.get(label, label)
            stored = submit_label(session, team[name], project.id, pair.id, choice, shown_id(session, pair, left))
            assert stored["label"] == label
    texts = {c.id: c.text for c in session.scalars(select(Completion))}
    expected = [(pairs[0].completion_a_id, pairs[0].completion_b_id), (pairs[1].completion_b_id, pairs[1].completion_a_id),
                (pairs[5].completion_a_id, pairs[5].completion_b_id), (pairs[7].completion_b_id, pairs[7].completion_a_id)]

    export = export_trl_jsonl(project.id, team["tina"], session=session)
    assert len(export.splitlines()) == 4
    (tmp_path / "export.jsonl").write_text(export)
    exported = read_preference(tmp_path / "export.jsonl")  # as an uploaded preference dataset reads
    run_dir = tmp_path / "run"
    snapshot_pairs(run_dir, session, dataset_file=None, project_ids=[project.id], include_arena=False, log=lambda _: None)
    snapshot = [json.loads(line) for line in (run_dir / PAIRS_FILE).read_text().splitlines()]
    trained = [{key: pair[key] for key in ("prompt", "chosen", "rejected")} for pair in snapshot]
    assert exported == trained
    assert [(pair["chosen"][0]["content"], pair["rejected"][0]["content"]) for pair in trained] == \
        [(texts[chosen], texts[rejected]) for chosen, rejected in expected]
    assert [pair["labeler"] for pair in snapshot] == ["lea, leo, lou", "lea, leo, lou", "leo, lou, tina",
                                                      "boss, lea, lou"]
    assert [pair["pair_id"] for pair in consensus_pairs(project.id, team["tina"], session=session)] == \
        [pairs[i].id for i in (0, 1, 5, 7)]


def test_a_hold_expires_and_the_pair_goes_to_someone_else(session, team):
    from db.models import LabelingAssignment, utcnow
    from datetime import timedelta

    job = make_generate_job(session, prompts=1, answers=2)  # one pair
    project = create_project(session, team["tina"], name="p", source_job_ids=[job.id], overlap=1)
    held = next_pair(session, team["lea"], project.id)
    assert next_pair(session, team["leo"], project.id) is None  # lea holds the only slot
    for assignment in session.scalars(select(LabelingAssignment)):
        assignment.expires_at = utcnow() - timedelta(seconds=1)  # lea walked away
    session.commit()
    assert next_pair(session, team["leo"], project.id)["pair_id"] == held["pair_id"]
    # lea comes back: her expired hold is gone and the slot is leo's now.
    assert next_pair(session, team["lea"], project.id) is None


def test_a_label_with_its_next_pair_runs_eight_statements(session, team):
    """The per-label work stays small under load (bench/bench_labeling.py): the project, the pair, the overlap
    guard, the label, its hold released, the labeler's hold looked up, a free pair taken, and the next screen
    (pair, progress and whether the hold keeps the pair) in one statement; the two commits apart."""
    job = make_generate_job(session, prompts=2, answers=3)
    project = create_project(session, team["tina"], name="p", source_job_ids=[job.id], overlap=1)
    lea = team["lea"]
    shown = next_pair(session, lea, project.id)
    session.expunge_all()  # as in a new request: nothing cached in the session
    lea = session.get(type(lea), lea.id)
    statements: list[str] = []
    engine = session.get_bind()

    def record(connection, cursor, statement, *rest) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        stored = submit_label(session, lea, project.id, shown["pair_id"], "left", shown["left"]["answer_id"],
                              and_next=True)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert stored["next"] is not None and not stored["duplicate"]
    assert len(statements) == 8, "\n".join(statements)
