"""Job handlers (worker/runner.py): a cancel while preparing data or training a tokenizer stops the work
and leaves nothing half-written. The heartbeat is a stand-in here (only its `should_stop` is used);
the real heartbeat and worker are covered by test_worker_integration.py."""

import random

from db.models import Dataset, DatasetKind
from tests.conftest import StopOnQuestion
from tests.support.jobs import log_lines
from worker.jobs import lifecycle as jobs
from worker.jobs.context import prepared_dir_for
from worker.kinds.prepare import handler as prepare
from worker.kinds.pretrain import handler as pretrain
from worker.kinds.train_tokenizer import handler as train_tokenizer
from worker.runtime.runner import _make_context


def add_corpus_dataset(session, settings, documents: int) -> Dataset:
    rng = random.Random(0)
    words = "the cat sat on a mat while tokenizers merge frequent byte pairs into tokens".split()
    row = Dataset(name="corpus", kind=DatasetKind.text, format="txt", path="pending",
                  original_filename="corpus.txt", size_bytes=0, stats={})
    session.add(row)
    session.flush()
    row.path = f"datasets/{row.id}/corpus.txt"
    path = settings.data_dir / row.path
    path.parent.mkdir(parents=True)
    path.write_text("\n\n".join(f"doc {n}: " + " ".join(rng.choices(words, k=20)) for n in range(documents)))
    row.size_bytes = path.stat().st_size
    session.commit()
    return row


def context_for(session, settings, kind, params, heartbeat):
    job = jobs.create_job(session, kind, params)
    return _make_context(session, job.id, 1, settings, heartbeat)


def test_cancelled_prepare_job_stops_and_leaves_no_token_files(workbench_env, session):
    dataset = add_corpus_dataset(session, workbench_env, documents=3000)  # three 1024-document chunks
    heartbeat = StopOnQuestion(1)
    ctx = context_for(session, workbench_env, "prepare", {"dataset_id": dataset.id, "tokenizer": "gpt2"}, heartbeat)
    outcome = prepare.run(ctx)
    assert outcome.stopped and "nothing was written" in outcome.summary and heartbeat.asked == 1
    prepared = prepared_dir_for(workbench_env, dataset.id, "gpt2")
    assert not prepared.exists() and not prepared.with_name("gpt2.tmp").exists()

    # A pretrain job stopped while preparing its data stops too, before any training.
    ctx = context_for(session, workbench_env, "pretrain",
                      {"dataset_id": dataset.id, "tokenizer": "gpt2", "preset": "tiny", "max_steps": 5},
                      StopOnQuestion(1))
    outcome = pretrain.run(ctx)
    assert outcome.stopped and outcome.summary == "stopped while preparing the data"
    assert not prepared.exists() and not any(ctx.run_dir.iterdir())

    # Not cancelled: the same job prepares everything.
    ctx = context_for(session, workbench_env, "prepare", {"dataset_id": dataset.id, "tokenizer": "gpt2"},
                      StopOnQuestion(10 ** 6))
    outcome = prepare.run(ctx)
    assert not outcome.stopped and (prepared / "stats.json").is_file()
    assert any("3,000 documents processed" in line for line in log_lines(session, ctx.job_id))


def test_cancelled_train_tokenizer_job_stops_while_reading_and_saves_nothing(workbench_env, session):
    dataset = add_corpus_dataset(session, workbench_env, documents=2500)
    heartbeat = StopOnQuestion(2)
    ctx = context_for(session, workbench_env, "train_tokenizer",
                      {"dataset_id": dataset.id, "name": "cancelled-bpe", "vocab_size": 300}, heartbeat)
    outcome = train_tokenizer.run(ctx)
    assert outcome.stopped and heartbeat.asked == 2
    assert not (workbench_env.data_dir / "tokenizers" / "cancelled-bpe").exists()
    assert not (workbench_env.data_dir / "tokenizers" / "cancelled-bpe.tmp").exists()
    assert any("1,000 documents processed" in line for line in log_lines(session, ctx.job_id))
