"""The labeling REST API end to end over HTTP: a trainer makes a project, two labelers label through the
routes only (as a labeling client would), repeats and retries store one label, agreement and exports."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from db.models import Comparison
from tests.conftest import ADMIN, LABELER, TRAINER
from tests.support.records import make_generate_job


def test_a_labeling_round_through_the_api(client, session, users):
    from db.models import Role
    from db.users import create_user

    create_user(session, "labeler2", "labeler2-password", Role.labeler)
    session.commit()
    second = ("labeler2", "labeler2-password")
    job = make_generate_job(session, prompts=2, answers=2)  # 2 pairs
    assert client.post("/api/labeling/projects", auth=LABELER,
                       json={"name": "p", "source_job_ids": [job.id]}).status_code == 403
    refused = client.post("/api/labeling/projects", auth=TRAINER, json={"name": "p", "source_job_ids": [job.id],
                                                                       "overlap": 0})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "overlap"]
    created = client.post("/api/labeling/projects", auth=TRAINER, json={
        "name": "helpful?", "source_job_ids": [job.id], "overlap": 2, "guidelines": "Pick the **helpful** one."})
    assert created.status_code == 201, created.text
    project = created.json()
    assert project["pairs"] == 2 and project["complete_pairs"] == 0
    assert [p["id"] for p in client.get("/api/labeling/projects", auth=LABELER).json()] == [project["id"]]
    base = f"/api/labeling/projects/{project['id']}"

    for auth in (LABELER, second):
        while True:
            shown = client.get(f"{base}/next", auth=auth)
            if shown.status_code == 204:
                break
            pair = shown.json()
            assert pair["prompt"]["messages"][0]["role"] == "user"
            body = {"pair_id": pair["pair_id"], "choice": "left", "idempotency_key": f"{auth[0]}-{pair['pair_id']}",
                    "left_answer_id": pair["left"]["answer_id"]}
            first = client.post(f"{base}/labels", auth=auth, json=body)
            retried = client.post(f"{base}/labels", auth=auth, json=body)  # a retry after a lost answer
            assert first.status_code == 201 and retried.status_code == 200
            assert retried.json()["id"] == first.json()["id"] and retried.json()["duplicate"]
    assert session.scalar(select(func.count(Comparison.id))) == 4
    assert client.get(f"{base}/progress", auth=LABELER).json() == {
        "done": 2, "skipped": 0, "today": 2, "left": 0, "pairs": 2, "complete_pairs": 2}

    # Undo hands the pair back; labeling it again restores the count.
    undone = client.post(f"{base}/undo", auth=second)
    assert undone.status_code == 200 and undone.json()["progress"]["done"] == 1
    again = undone.json()
    assert client.post(f"{base}/labels", auth=second, json={
        "pair_id": again["pair_id"], "choice": "left", "left_answer_id": again["left"]["answer_id"]
    }).status_code == 201

    assert client.get(f"{base}/agreement", auth=LABELER).status_code == 403
    report = client.get(f"{base}/agreement", auth=ADMIN).json()
    assert report["labels"] == 4 and set(report["labelers"]) == {"labeler1", "labeler2"}
    exported = client.get(f"{base}/export?format=trl", auth=TRAINER)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in exported.text.splitlines()]
    # Both labelers preferred what they saw on the left; the pairs agree only where both saw the same answer
    # there, and every exported pair's chosen answer is one that a majority (both) preferred.
    assert len(records) == report["consensus"]["pairs"]
    for record in records:
        assert set(record) == {"prompt", "chosen", "rejected"} and record["chosen"][0]["role"] == "assistant"
    csv_text = client.get(f"{base}/export?format=csv", auth=TRAINER).text
    assert csv_text.splitlines()[0].startswith("label_id,pair_id") and len(csv_text.splitlines()) == 5
    assert client.get(f"{base}/export?format=xml", auth=TRAINER).status_code == 422


def test_ids_beyond_the_columns_are_422_naming_the_parameter(client, users):
    huge = 2 ** 63
    for url in (f"/api/labeling/projects/{huge}", f"/api/labeling/projects/{huge}/next"):
        answer = client.get(url, auth=TRAINER)
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"][-1] == "project_id", answer.text
    answer = client.post("/api/labeling/projects/1/labels", auth=TRAINER,
                         json={"pair_id": huge, "choice": "left", "left_answer_id": "1"})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"][-1] == "pair_id"
    assert client.get(f"/api/datasets/{huge}", auth=TRAINER).json()["detail"][0]["loc"][-1] == "dataset_id"
    assert client.patch(f"/api/users/{huge}", auth=ADMIN, json={"disabled": True}).json()["detail"][0]["loc"][-1] \
        == "user_id"


def test_a_label_answered_with_the_next_pair(client, session, users):
    """POST .../labels?next=true: the label and the labeler's next pair in one request (one per label)."""
    job = make_generate_job(session, prompts=2, answers=2)  # 2 pairs
    project = client.post("/api/labeling/projects", auth=TRAINER,
                          json={"name": "one request per label", "source_job_ids": [job.id]}).json()
    base = f"/api/labeling/projects/{project['id']}"
    pair = client.get(f"{base}/next", auth=LABELER).json()
    body = {"pair_id": pair["pair_id"], "choice": "right", "left_answer_id": pair["left"]["answer_id"],
            "idempotency_key": "first"}
    first = client.post(f"{base}/labels?next=true", auth=LABELER, json=body)
    assert first.status_code == 201, first.text
    following = first.json()["next"]
    assert following["pair_id"] != pair["pair_id"] and following["progress"] == first.json()["progress"]
    assert client.get(f"{base}/next", auth=LABELER).json() == following  # held for this labeler
    retried = client.post(f"{base}/labels?next=true", auth=LABELER, json=body)
    assert retried.status_code == 200 and retried.json()["id"] == first.json()["id"]
    assert retried.json()["next"] == following
    last = client.post(f"{base}/labels?next=true", auth=LABELER, json={
        "pair_id": following["pair_id"], "choice": "tie", "left_answer_id": following["left"]["answer_id"]})
    assert last.status_code == 201 and last.json()["next"] is None and last.json()["progress"]["left"] == 0
    # Without ?next the answer has no `next` at all (not a null that would read as "nothing left").
    plain = client.post(f"{base}/labels", auth=LABELER, json=body)
    assert plain.status_code == 200 and "next" not in plain.json()
    assert client.post(f"{base}/labels?next=maybe", auth=LABELER, json=body).status_code == 422
    assert session.scalar(select(func.count(Comparison.id))) == 2


def test_choices_are_the_one_declared_vocabulary(client, users):
    """The label/vote vocabulary is declared once (llm/preference_labels.py): the OpenAPI page lists the allowed
    values, and any other value is a 422 naming the field, before anything is looked up."""
    from llm.preference_labels import VOTES, Choice, Label

    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["Choice"]["enum"] == [choice.value for choice in Choice] == ["left", "right", "tie", "both_bad",
                                                                                "skip"]
    assert schemas["LabelSubmit"]["properties"]["choice"]["$ref"] == "#/components/schemas/Choice"
    assert schemas["VoteCreate"]["properties"]["choice"]["enum"] == [choice.value for choice in VOTES]
    assert schemas["Label"]["enum"] == [label.value for label in Label] == ["a", "b", "tie", "both_bad", "skip"]
    for refused in ("A", "a", "Left", "", 1):
        answer = client.post("/api/labeling/projects/1/labels", auth=LABELER,
                             json={"pair_id": 1, "choice": refused, "left_answer_id": "1"})
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "choice"], answer.text
    for refused in ("skip", "a", "bothbad"):  # the arena has no skip: a vote names the better answer, or neither
        answer = client.post("/api/arena/votes", auth=LABELER,
                             json={"battle_id": 1, "choice": refused})
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "choice"], answer.text


def test_time_spent_is_bounded_at_a_day_in_one_place(client, session, users):
    """db.models.MAX_TIME_SPENT_S bounds a label's and a vote's time_spent_s alike: the edge is accepted, a
    millisecond more (or less than 0) is a 422 naming the field, and the services refuse what the UI would send."""
    from db.models import MAX_TIME_SPENT_S, Model, ModelKind
    from web.services import arena, labeling
    from web.services.common import InvalidInput

    job = make_generate_job(session, prompts=2, answers=2)
    project = client.post("/api/labeling/projects", auth=TRAINER,
                          json={"name": "timed", "source_job_ids": [job.id]}).json()
    base = f"/api/labeling/projects/{project['id']}"
    shown = client.get(f"{base}/next", auth=LABELER).json()
    label = {"pair_id": shown["pair_id"], "choice": "left", "left_answer_id": shown["left"]["answer_id"]}
    for refused in (-0.001, MAX_TIME_SPENT_S + 0.001, 10 ** 9):
        answer = client.post(f"{base}/labels", auth=LABELER, json={**label, "time_spent_s": refused})
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "time_spent_s"], answer.text
    with pytest.raises(InvalidInput) as refused_by_the_service:
        labeling.submit_label(session, LABELER[0], project["id"], **label, time_spent_s=MAX_TIME_SPENT_S + 0.001)
    assert refused_by_the_service.value.field == "time_spent_s"
    stored = client.post(f"{base}/labels", auth=LABELER, json={**label, "time_spent_s": MAX_TIME_SPENT_S})
    assert stored.status_code == 201, stored.text
    session.expire_all()
    assert session.get(Comparison, stored.json()["id"]).time_spent_s == MAX_TIME_SPENT_S

    models = [Model(name=f"chat-{n}", kind=ModelKind.sft, tokenizer="gpt2", config={}, path=f"models/chat-{n}")
              for n in (1, 2)]
    session.add_all(models)
    session.commit()
    battle = arena.record_answers(session, LABELER[0], [{"role": "user", "content": "Hi"}],
                                  {"model_id": models[0].id, "text": "Hello"}, {"model_id": models[1].id, "text": "Hey"})
    vote = {"battle_id": battle["battle_id"], "choice": "tie"}
    for refused in (-0.001, MAX_TIME_SPENT_S + 0.001):
        answer = client.post("/api/arena/votes", auth=LABELER, json={**vote, "time_spent_s": refused})
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "time_spent_s"], answer.text
    with pytest.raises(InvalidInput) as refused_by_the_service:
        arena.vote(session, LABELER[0], **vote, time_spent_s=MAX_TIME_SPENT_S + 0.001)
    assert refused_by_the_service.value.field == "time_spent_s"
    voted = client.post("/api/arena/votes", auth=LABELER, json={**vote, "time_spent_s": MAX_TIME_SPENT_S})
    assert voted.status_code == 201, voted.text
    session.expire_all()
    assert session.get(Comparison, voted.json()["comparison_id"]).time_spent_s == MAX_TIME_SPENT_S


def test_a_retry_racing_an_undo_is_refused_not_an_error(client, session, users, database_url):
    """A label's retry whose label is undone between its refused insert and its lookup of the stored label (the
    race an undo stress run hit) answers 409 saying so, with nothing stored, not a 500."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from db.session import SessionLocal
    from web.services.labeling import undo_last_label

    job = make_generate_job(session, prompts=1, answers=2)  # one pair
    project = client.post("/api/labeling/projects", auth=TRAINER,
                          json={"name": "p", "source_job_ids": [job.id], "overlap": 2}).json()
    base = f"/api/labeling/projects/{project['id']}"
    pair = client.get(f"{base}/next", auth=LABELER).json()
    body = {"pair_id": pair["pair_id"], "choice": "left", "idempotency_key": "k",
            "left_answer_id": pair["left"]["answer_id"]}
    assert client.post(f"{base}/labels", auth=LABELER, json=body).status_code == 201

    undone: list[int] = []

    def undo_once(rolled_back: Session) -> None:  # the retry's insert was refused: the undo lands now
        if not undone:
            undone.append(0)
            with SessionLocal(database_url) as other:
                undone[0] = undo_last_label(other, LABELER[0], project["id"])["undone"]

    event.listen(Session, "after_rollback", undo_once)
    try:
        retried = client.post(f"{base}/labels", auth=LABELER, json=body)
    finally:
        event.remove(Session, "after_rollback", undo_once)
    assert undone and undone[0]
    assert retried.status_code == 409, retried.text
    assert "undone" in retried.json()["detail"]
    assert session.scalar(select(func.count(Comparison.id))) == 0
    # Labeling the pair again stores it (the count was given back with the undo).
    assert client.post(f"{base}/labels", auth=LABELER, json={**body, "idempotency_key": "k2"}).status_code == 201


def test_label_ids_are_never_reused_and_the_undo_names_the_label_it_removed(client, session, users):
    """The newest label undone, another label stored: it gets a new id (SQLite gave the removed one again), so
    an id a retry or an undo answers names one label only."""
    from db.models import Role
    from db.users import create_user

    create_user(session, "labeler2", "labeler2-password", Role.labeler)
    session.commit()
    second = ("labeler2", "labeler2-password")
    job = make_generate_job(session, prompts=2, answers=2)  # 2 pairs
    project = client.post("/api/labeling/projects", auth=TRAINER,
                          json={"name": "p", "source_job_ids": [job.id], "overlap": 2}).json()
    base = f"/api/labeling/projects/{project['id']}"

    def label(auth) -> dict:
        pair = client.get(f"{base}/next", auth=auth).json()
        stored = client.post(f"{base}/labels", auth=auth, json={
            "pair_id": pair["pair_id"], "choice": "tie", "left_answer_id": pair["left"]["answer_id"]})
        assert stored.status_code == 201, stored.text
        return stored.json()

    label(LABELER)
    newest = label(LABELER)
    undone = client.post(f"{base}/undo", auth=LABELER)
    assert undone.status_code == 200 and undone.json()["undone"] == newest["id"]
    assert undone.json()["pair_id"] == newest["pair_id"]
    other = label(second)  # another labeler's label, stored right after the newest one was removed
    assert other["id"] > newest["id"]
    again = label(LABELER)
    assert again["id"] > other["id"]
    assert session.scalar(select(func.max(Comparison.id))) == again["id"]
    # Nothing left to undo twice over: the second undo of the same request is refused, not a 500.
    client.post(f"{base}/undo", auth=LABELER)
    client.post(f"{base}/undo", auth=LABELER)
    assert client.post(f"{base}/undo", auth=LABELER).status_code == 409


def test_a_labeler_sees_answers_by_opaque_ids(client, session, users):
    """The screen names a pair's answers by ids that are not the completions' (those follow the generate jobs,
    so the models), differ from pair to pair for one answer, and are what a label names (a completion's
    database id is refused, naming the field)."""
    from db.models import LabelingPair

    job = make_generate_job(session, prompts=1, answers=3)  # 3 pairs; every answer is in two of them
    project = client.post("/api/labeling/projects", auth=TRAINER,
                          json={"name": "p", "source_job_ids": [job.id], "overlap": 1}).json()
    base = f"/api/labeling/projects/{project['id']}"
    seen: dict[int, str] = {}  # completion id -> an id it was shown with
    for _ in range(3):
        pair = client.get(f"{base}/next", auth=LABELER).json()
        stored_pair = session.get(LabelingPair, pair["pair_id"])
        completions = {stored_pair.completion_a_id, stored_pair.completion_b_id}
        shown = {pair["left"]["answer_id"], pair["right"]["answer_id"]}
        assert not shown & {str(c) for c in completions} and len(shown) == 2
        wrong = client.post(f"{base}/labels", auth=LABELER, json={
            "pair_id": pair["pair_id"], "choice": "left", "left_answer_id": str(stored_pair.completion_a_id)})
        assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["body", "left_answer_id"]
        stored = client.post(f"{base}/labels", auth=LABELER, json={
            "pair_id": pair["pair_id"], "choice": "left", "left_answer_id": pair["left"]["answer_id"]})
        assert stored.status_code == 201
        left = session.get(Comparison, stored.json()["id"])
        left_completion = left.completion_b_id if left.swapped else left.completion_a_id
        assert stored.json()["label"] == ("b" if left.swapped else "a")
        for completion in completions:
            seen.setdefault(completion, set()).update(shown)
        assert left_completion in completions
    # Each answer was in two pairs, with two different ids.
    assert all(len(ids) == 4 for ids in seen.values())


def test_a_project_is_changed_and_exported_with_names_by_its_owners_and_admins(client, session, users):
    """Another trainer may neither change a project's guidelines nor see its agreement or export its labels with
    the labelers' names; its owner, the co-owners it names (people who manage labeling) and admins may."""
    from db.models import Role
    from db.users import create_user

    other = create_user(session, "trainer2", "trainer2-password", Role.trainer)
    session.commit()
    other_auth = ("trainer2", "trainer2-password")
    job = make_generate_job(session, prompts=1, answers=2)
    created = client.post("/api/labeling/projects", auth=TRAINER, json={"name": "mine", "source_job_ids": [job.id]})
    project = created.json()
    assert project["owner_id"] == users["trainer"].id and project["co_owner_ids"] == []
    base = f"/api/labeling/projects/{project['id']}"

    def allowed(auth) -> dict[str, int]:
        return {"guidelines": client.put(f"{base}/guidelines", auth=auth, json={"guidelines": "Be kind."}).status_code,
                "agreement": client.get(f"{base}/agreement", auth=auth).status_code,
                "labels with names": client.get(f"{base}/export?format=csv", auth=auth).status_code,
                "co-owners": client.put(f"{base}/co-owners", auth=auth, json={"co_owner_ids": []}).status_code,
                "pairs": client.get(f"{base}/export?format=trl", auth=auth).status_code}

    refused = client.put(f"{base}/guidelines", auth=other_auth, json={"guidelines": "Mine now."})
    assert refused.status_code == 403 and "belongs to someone else" in refused.json()["detail"]
    assert allowed(other_auth) == {"guidelines": 403, "agreement": 403, "labels with names": 403, "co-owners": 403,
                                   "pairs": 200}  # the consensus pairs name nobody
    assert client.get(base, auth=TRAINER).json()["guidelines"] == ""  # nothing changed
    assert allowed(LABELER) == {key: 403 for key in ("guidelines", "agreement", "labels with names", "co-owners",
                                                     "pairs")}
    assert set(allowed(TRAINER).values()) == set(allowed(ADMIN).values()) == {200}

    # The owner names a co-owner, who may then do what the owner does; a labeler cannot be one.
    wrong = client.put(f"{base}/co-owners", auth=TRAINER, json={"co_owner_ids": [users["labeler"].id]})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["body", "co_owner_ids"]
    named = client.put(f"{base}/co-owners", auth=TRAINER, json={"co_owner_ids": [other.id, other.id]})
    assert named.status_code == 200 and named.json()["co_owner_ids"] == [other.id]
    assert set(allowed(other_auth).values()) == {200}  # (which also named no co-owners again)
    assert client.get(base, auth=TRAINER).json()["co_owner_ids"] == []
    assert allowed(other_auth)["guidelines"] == 403
    co_owned = client.post("/api/labeling/projects", auth=TRAINER, json={
        "name": "shared", "source_job_ids": [job.id], "co_owner_ids": [other.id]}).json()
    assert client.put(f"/api/labeling/projects/{co_owned['id']}/guidelines", auth=other_auth,
                      json={"guidelines": "ok"}).status_code == 200
