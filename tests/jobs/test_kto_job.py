"""The `kto` job kind in the worker: its sources (a feedback or preference dataset, chat thumbs, labeling projects'
consensus, "both bad" included) are checked at submit, refused without good or bad answers, snapshotted once per run
with the thumbs and labels that went in; a run stopped half-way resumes from its checkpoint on the same examples and
records a kto Model with its parent. Learning is tested in tests/llm/test_defaults_learn.py; here the platform."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from db.models import (AnswerFeedback, Comparison, Dataset, DatasetKind, Job, JobStatus, LabelingPair, Metric, Model,
                       ModelKind)
from llm.preference_labels import Label
from tests.conftest import StopOnQuestion
from tests.support.records import add_base_model, add_dataset, labeled_project, preference_lines
from worker.jobs import lifecycle as jobs
from worker.jobs.feedback_examples import EXAMPLES_FILE, SOURCES_FILE
from worker.jobs.params import JobParamsError
from worker.kinds.kto import handler as kto_kind
from worker.runtime.runner import _make_context, execute_job

pytestmark = pytest.mark.slow


def run_params(model_id, **overrides):
    return {"model_id": model_id, "max_steps": 4, "batch_size": 4, "block_size": 64, "eval_every": 2,
            "checkpoint_every": 2, "log_every": 1, "device": "cpu", **overrides}


def feedback_lines(count: int = 16, good: bool | None = None) -> list[str]:
    """TRL unpaired lines from the polite pairs: alternately the chosen answer (good) and the rejected one (bad)."""
    lines = []
    for index, line in enumerate(preference_lines(count)):
        pair = json.loads(line)
        label = index % 2 == 0 if good is None else good
        lines.append(json.dumps({"prompt": pair["prompt"], "completion": pair["chosen" if label else "rejected"],
                                 "label": label}))
    return lines


def add_thumbs(session, model_id: int, user_id: int, labels: list[bool]) -> None:
    for index, label in enumerate(labels):
        session.add(AnswerFeedback(user_id=user_id, model_id=model_id, answer=f"answer {index}", label=label,
                                   messages=[{"role": "user", "content": f"question {index}"}],
                                   answer_sha256=f"{index:064d}"))
    session.commit()


def test_sources_and_classes_are_checked_at_submit(workbench_env, session):
    base = add_base_model(session, workbench_env)
    only_good = add_dataset(session, workbench_env, DatasetKind.feedback, feedback_lines(8, good=True), "good")
    chat = add_dataset(session, workbench_env, DatasetKind.chat, ['{"messages": []}'], "chat")
    cases = [
        (run_params(base.id), "dataset_id", "choose where the answers come from"),
        (run_params(base.id, dataset_id=chat.id), "dataset_id", "needs a feedback or preference dataset"),
        (run_params(base.id, dataset_id=only_good.id), "dataset_id", "8 good and 0 bad"),
        (run_params(base.id, project_ids="77"), "project_ids", "no labeling project with id 77"),
        (run_params(base.id, include_thumbs=True), "include_thumbs", "0 good and 0 bad"),
        (run_params(base.id, include_thumbs=True, thumbs_model_ids="x"), "thumbs_model_ids", "not a project id"),
    ]
    for params, field, words in cases:
        with pytest.raises(JobParamsError) as caught:
            jobs.create_job(session, "kto", params)
        assert caught.value.field == field and words in caught.value.message, str(caught.value)
    mixed = add_dataset(session, workbench_env, DatasetKind.feedback, feedback_lines(8), "mixed")
    with pytest.raises(JobParamsError) as caught:
        jobs.create_job(session, "kto", run_params(base.id, dataset_id=mixed.id, batch_size=1))
    assert caught.value.field == "batch_size"
    assert session.scalar(select(func.count()).select_from(Job)) == 0
    job = jobs.create_job(session, "kto", run_params(base.id, dataset_id=mixed.id))
    assert job.params["method"] == "full" and job.params["lr"] > 0  # "auto" resolved on the tiny base
    # The upload's counts are read, not the file again (this row has no file at all).
    counted = Dataset(name="counted", kind=DatasetKind.feedback, format="jsonl", path="datasets/none.jsonl",
                      original_filename="c.jsonl", size_bytes=1, stats={"answers": 5, "good": 0, "bad": 5})
    session.add(counted)
    session.commit()
    with pytest.raises(JobParamsError, match="0 good and 5 bad"):
        jobs.create_job(session, "kto", run_params(base.id, dataset_id=counted.id))
    # A preference dataset is unpaired: its chosen answers good, its rejected ones bad.
    pairs = add_dataset(session, workbench_env, DatasetKind.preference, preference_lines(4), "pairs")
    assert jobs.create_job(session, "kto", run_params(base.id, dataset_id=pairs.id)).kind == "kto"


def test_a_kto_job_snapshots_thumbs_and_labels_once_resumes_and_records_a_kto_model(workbench_env, session):
    base = add_base_model(session, workbench_env)
    project = labeled_project(session)  # two pairs, "a" wins both ...
    first_pair = session.scalars(select(LabelingPair).where(LabelingPair.project_id == project.id)).first()
    label = session.scalar(select(Comparison).where(Comparison.pair_id == first_pair.id))
    label.label = Label.both_bad  # ... then the first is "both bad": both its answers are bad examples
    session.commit()
    add_thumbs(session, base.id, label.annotator_id, [True, False, True])
    upload = add_dataset(session, workbench_env, DatasetKind.feedback, feedback_lines(16), "feedback")
    job = jobs.create_job(session, "kto", run_params(base.id, dataset_id=upload.id, project_ids=str(project.id),
                                                     include_thumbs=True, name="tiny-kto"))
    ctx = _make_context(session, job.id, 1, workbench_env, StopOnQuestion(2))
    assert kto_kind.run(ctx).stopped  # a worker that stops half-way (a cancel, a kill: the checkpoint stays)
    run_dir = workbench_env.data_dir / job.run_dir
    snapshot = (run_dir / EXAMPLES_FILE).read_text()
    sources = json.loads((run_dir / SOURCES_FILE).read_text())
    assert sources["counts"] == {"upload": {"good": 8, "bad": 8}, "thumbs": {"good": 2, "bad": 1},
                                 "label": {"good": 1, "bad": 3}}
    assert len(sources["feedback_ids"]) == 3 and len(sources["comparison_ids"]) == 2

    # Thumbs given after the run started do not change what it trains on; the run resumes from its checkpoint.
    session.execute(AnswerFeedback.__table__.delete())
    session.commit()
    claimed = jobs.claim_next_job(session, "test-host")
    assert execute_job(job.id, claimed.attempts, workbench_env) == JobStatus.succeeded
    assert (run_dir / EXAMPLES_FILE).read_text() == snapshot
    session.expire_all()
    job = session.get(Job, job.id)
    model = session.get(Model, job.output_model_id)
    assert model.kind == ModelKind.kto and model.parent_model_id == base.id and model.name == "tiny-kto"
    names = set(session.scalars(select(Metric.name).where(Metric.job_id == job.id)))
    assert {"loss", "kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected",
            "val_loss", "val_rewards/margins", "val_kl",
            # the degeneration watch (llm/degeneration.py), at every evaluation, as DPO's (the good answers' log-p per
            # token too, when the held-out answers hold a good one: here the one held out may be bad)
            "val_samples/kl_per_token", "degeneration_problems"} <= names
    steps = sorted(set(session.scalars(select(Metric.step).where(Metric.job_id == job.id, Metric.name == "loss"))))
    assert steps == [1, 2, 3, 4]  # steps 1-2 from the first attempt, 3-4 resumed, none twice
    from worker.kinds.kto.card import run_report

    rows = dict(run_report(run_dir))
    assert rows["feedback from thumbs"] == "2 good, 1 bad" and "KTO held-out reward margin (good - bad)" in rows
    assert rows["degeneration watch"].startswith("no problem in")
    # Lineage: the thumbs and the labeling project that trained it; its report card says what went in.
    from web.services.lineage import model_lineage, report_card

    graph = model_lineage(workbench_env, model.id, session=session)
    thumbs = next(node for node in graph["nodes"] if node["id"] == "thumbs")
    assert thumbs["answers"] == {job.id: 3} and f"project:{project.id}" in {node["id"] for node in graph["nodes"]}
    assert {"from": "thumbs", "to": f"job:{job.id}"} in graph["edges"]
    assert ("feedback from label", "1 good, 3 bad") in report_card(workbench_env, model.id, session=session)
