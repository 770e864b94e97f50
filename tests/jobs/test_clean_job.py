"""The `clean` kind through the real job layer: validated against its declaration, claimed, stopped by its heartbeat,
resumed by the runner and finished; the clean corpus becomes a text dataset that says where it came from, carries its
report, and is what `prepare` takes."""

from __future__ import annotations

import json
import random

import pytest
from sqlalchemy import select

from db.models import Dataset, DatasetKind, Job, JobStatus
from llm.synthetic_web import article_html, english_text, foreign_text
from tests.conftest import StopOnQuestion
from tests.support.jobs import claim, log_lines
from tests.support.records import add_dataset
from worker.jobs import lifecycle as jobs
from worker.kinds.clean import handler as clean_handler
from worker.runtime.runner import _make_context, execute_job

pytestmark = pytest.mark.slow  # two clean runs per database (about 10 s each on a quiet machine)


def raw_lines() -> list[str]:
    rng = random.Random(5)
    pages = [{"html": article_html(rng, english_text(rng, 28)), "url": f"https://n{i}.example.org/"} for i in range(3)]
    pages.append({"html": article_html(rng, foreign_text(rng, "de")), "url": "https://de.example.org/"})
    pages.append({"text": english_text(rng, 24) + "\nMail me: someone@somewhere.com"})
    return [json.dumps(page) for page in pages]


def test_a_clean_job_stops_resumes_and_makes_a_text_dataset_with_its_lineage_and_report(workbench_env, session):
    raw = add_dataset(session, workbench_env, DatasetKind.raw, raw_lines(), "crawl")
    job = jobs.create_job(session, "clean", {"dataset_id": raw.id, "minhash_buckets": 4})
    first = claim(session, job.id)
    outcome = clean_handler.run(_make_context(session, job.id, first, workbench_env, StopOnQuestion(1)))
    assert outcome.stopped and "resum" in outcome.summary

    assert jobs.finish_job(session, job.id, first, JobStatus.queued, log_line="requeued", event="requeued")
    assert execute_job(job.id, claim(session, job.id), workbench_env) == JobStatus.succeeded
    session.expire_all()
    finished = session.get(Job, job.id)
    assert finished.progress == 1.0
    lines = log_lines(session, job.id)
    assert any("5 documents in" in line and "4 out" in line for line in lines)
    clean = session.scalars(select(Dataset).where(Dataset.id != raw.id)).one()
    assert clean.kind == DatasetKind.text and clean.format == "jsonl" and clean.name == "crawl (clean)"
    assert clean.stats["cleaned_from"] == {"dataset_id": raw.id, "dataset_name": "crawl", "job_id": job.id}
    assert clean.stats["documents"] == 4
    report = json.loads((workbench_env.data_dir / clean.stats["clean_report"]).read_text())
    assert {step["step"]: step["removed"] for step in report["steps"]}["language"] == {"de, not en": 1}
    text = (workbench_env.data_dir / clean.path).read_text()
    assert "someone@somewhere.com" not in text and "cookies" not in text

    # What `prepare` takes: the clean dataset tokenizes.
    from llm.prepare import prepare

    stats = prepare(workbench_env.data_dir / clean.path, "gpt2", workbench_env.data_dir / "prepared")
    assert stats["documents"] == 4 and stats["tokens"] > 1000

    # Lineage: a model pretrained on the clean dataset shows raw → clean job → clean dataset → its job → model.
    from db.models import Model, ModelKind
    from web.services.lineage import model_lineage

    pretrain = Job(kind="pretrain", status=JobStatus.succeeded, params={"dataset_id": clean.id}, dataset_id=clean.id)
    session.add(pretrain)
    session.flush()
    model = Model(name="base", kind=ModelKind.base, tokenizer="gpt2", config={}, path="models/base", job_id=pretrain.id)
    session.add(model)
    session.commit()
    graph = model_lineage(workbench_env, model.id, session=session)
    edges = {(edge["from"], edge["to"]) for edge in graph["edges"]}
    assert {(f"dataset:{raw.id}", f"job:{job.id}"), (f"job:{job.id}", f"dataset:{clean.id}"),
            (f"dataset:{clean.id}", f"job:{pretrain.id}"), (f"job:{pretrain.id}", f"model:{model.id}")} <= edges
