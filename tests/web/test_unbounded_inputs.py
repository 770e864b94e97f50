"""Inputs with no bound, refused or bounded through the API (issue 19 item 12): guidelines of megabytes sent to
every labeler, a trainer among a project's labelers, thousands of duplicate source jobs, NUL and right-to-left
override characters in names, and a schedule value equal to its default changed without a word."""

from __future__ import annotations

from db.models import Dataset, DatasetKind, Job, Model, ModelKind
from tests.conftest import LABELER, TRAINER
from tests.support.records import CORPUS, make_generate_job, pretrain_params, upload
from web.services.labeling import MAX_GUIDELINES_BYTES, MAX_SOURCE_JOBS

HOSTILE_NAMES = {"a\x00b": "U+0000", "invoice\u202etxt.exe": "U+202E RIGHT-TO-LEFT OVERRIDE",
                 "line\nbreak": "U+000A", "\u2067isolate": "U+2067"}


def refused_field(answer) -> list:
    assert answer.status_code == 422, answer.text
    return answer.json()["detail"][0]["loc"]


def test_guidelines_are_capped_and_not_sent_with_every_project_listed(client, session, users):
    job = make_generate_job(session, prompts=1, answers=2)
    at_the_cap = "é" * (MAX_GUIDELINES_BYTES // 2)  # two bytes each in UTF-8: exactly the cap
    over = at_the_cap + "x"
    answer = client.post("/api/labeling/projects", auth=TRAINER,
                         json={"name": "p", "source_job_ids": [job.id], "guidelines": over})
    assert refused_field(answer) == ["body", "guidelines"] and "64 KB" in answer.json()["detail"][0]["msg"]
    created = client.post("/api/labeling/projects", auth=TRAINER,
                          json={"name": "p", "source_job_ids": [job.id], "guidelines": at_the_cap})
    assert created.status_code == 201, created.text
    base = f"/api/labeling/projects/{created.json()['id']}"
    assert refused_field(client.put(f"{base}/guidelines", auth=TRAINER, json={"guidelines": over})) == \
        ["body", "guidelines"]
    # The list a labeler's screen loads names the projects without their guidelines; the one opened has them.
    listed = client.get("/api/labeling/projects", auth=LABELER).json()
    assert listed and all("guidelines" not in project for project in listed)
    assert client.get(base, auth=LABELER).json()["guidelines"] == at_the_cap


def test_labelers_named_are_labelers(client, session, users):
    """Trainers and admins label every project already: naming one among the labelers limits nothing and is
    refused saying the rule; a labeler named twice is named once."""
    job = make_generate_job(session, prompts=1, answers=2)
    for who in ("trainer", "admin"):
        answer = client.post("/api/labeling/projects", auth=TRAINER, json={
            "name": "p", "source_job_ids": [job.id], "labeler_ids": [users["labeler"].id, users[who].id]})
        assert refused_field(answer) == ["body", "labeler_ids"]
        assert "labeler role only" in answer.json()["detail"][0]["msg"]
    created = client.post("/api/labeling/projects", auth=TRAINER, json={
        "name": "p", "source_job_ids": [job.id], "labeler_ids": [users["labeler"].id] * 3})
    assert created.status_code == 201 and created.json()["labeler_ids"] == [users["labeler"].id]


def test_source_jobs_are_deduplicated_and_capped(client, session, users):
    job = make_generate_job(session, prompts=1, answers=2)
    created = client.post("/api/labeling/projects", auth=TRAINER,
                          json={"name": "p", "source_job_ids": [job.id] * 10_000})
    assert created.status_code == 201, created.text
    assert created.json()["source_job_ids"] == [job.id] and created.json()["pairs"] == 1
    too_many = client.post("/api/labeling/projects", auth=TRAINER,
                           json={"name": "p", "source_job_ids": list(range(1, MAX_SOURCE_JOBS + 2))})
    assert refused_field(too_many) == ["body", "source_job_ids"]
    assert f"at most {MAX_SOURCE_JOBS}" in too_many.json()["detail"][0]["msg"]


def test_names_with_control_or_bidirectional_characters_are_refused_naming_the_field(client, session, users):
    job = make_generate_job(session, prompts=1, answers=2)
    trainer = users["trainer"]
    model = Model(name="m", kind=ModelKind.sft, tokenizer="gpt2", path="models/m", owner_id=trainer.id)
    dataset = Dataset(name="d", kind=DatasetKind.text, format="txt", path="datasets/1/data.txt",
                      original_filename="d.txt", size_bytes=1, owner_id=trainer.id)
    job.owner_id = trainer.id
    session.add_all([model, dataset])
    session.commit()
    for name, described in HOSTILE_NAMES.items():
        answers = {
            "project": client.post("/api/labeling/projects", auth=TRAINER,
                                   json={"name": name, "source_job_ids": [job.id]}),
            "job": client.patch(f"/api/jobs/{job.id}", auth=TRAINER, json={"name": name}),
            "model": client.patch(f"/api/models/{model.id}", auth=TRAINER, json={"name": name}),
            "dataset": client.patch(f"/api/datasets/{dataset.id}", auth=TRAINER, json={"name": name}),
        }
        for what, answer in answers.items():
            assert refused_field(answer) == ["body", "name"], what
            assert described in answer.json()["detail"][0]["msg"], (what, answer.text)
    dataset_id = upload(client, CORPUS).json()["id"]
    submitted = client.post("/api/jobs", auth=TRAINER, json={
        "kind": "pretrain", "params": pretrain_params(dataset_id, name="run\u202ename")})
    assert refused_field(submitted) == ["body", "params", "name"] and "U+202E" in submitted.text
    assert refused_field(upload(client, CORPUS + "more", name="corpus\x00")) == ["body", "name"]
    session.expire_all()
    assert session.get(Job, job.id).name is None and session.get(Model, model.id).name == "m"


def test_a_schedule_value_equal_to_its_default_is_fitted_to_a_short_run_and_says_so(client, session, users):
    """Sent as it is or left out, a warmup equal to its default (100 of 1000 steps) shrinks with a 50-step run:
    the submit's answer says so (an `adjusted` event, and the log), naming each value and what it became."""
    dataset_id = upload(client, CORPUS).json()["id"]
    submitted = client.post("/api/jobs", auth=TRAINER, json={
        "kind": "pretrain", "params": pretrain_params(dataset_id, max_steps=50, warmup=100)})
    assert submitted.status_code == 201, submitted.text
    job = submitted.json()
    adjusted = [event for event in job["events"] if event["action"] == "adjusted"]
    assert len(adjusted) == 1 and "warmup 100 → 5" in adjusted[0]["detail"] and "50-step run" in adjusted[0]["detail"]
    assert job["params"]["warmup"] == 5
    logs = client.get(f"/api/jobs/{job['id']}/logs", auth=TRAINER).json()
    assert any("warmup 100 → 5" in line["line"] for line in logs)
    # A value that is not the default is kept, and nothing is said.
    kept = client.post("/api/jobs", auth=TRAINER, json={
        "kind": "pretrain", "params": pretrain_params(dataset_id, max_steps=50, warmup=7, eval_every=10,
                                                      checkpoint_every=10)}).json()
    assert kept["params"]["warmup"] == 7 and not [e for e in kept["events"] if e["action"] == "adjusted"]
