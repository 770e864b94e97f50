"""The `evaluate` kind through the real job layer (validated against its declaration, claimed, run by the runner,
stopped and resumed), on a benchmark and on a text dataset; and the Models tab's comparison of what it wrote
(web.services.compare and the view's table and charts)."""

from __future__ import annotations

import json

import pytest
import torch
from sqlalchemy import func, select

from db.models import Dataset, DatasetKind, Job, JobStatus, Metric, Model, ModelKind
from llm.checkpoint import save_model
from llm.evaluate import evaluate
from llm.evaluate_config import EvaluateConfig
from llm.evaluation_table import results_table
from llm.model import GPT, config_from_preset
from llm.multiple_choice import evaluate_benchmark
from llm.tokenizer import get_tokenizer
from tests.conftest import StopOnQuestion
from tests.support.jobs import claim, log_lines
from web.services.common import NotFound, PermissionDenied
from web.services.compare import compare_models
from web.ui.compare_view import comparison_table_html, curves_figure, evaluation_figure
from worker.jobs import lifecycle as jobs
from worker.jobs.context import prepared_dir_for
from worker.jobs.params import JobParamsError
from worker.kinds.evaluate import handler as evaluate_handler
from worker.runtime.runner import _make_context, execute_job

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUESTIONS = [
    {"question": "Colour of the sky:", "choices": ["blue", "green", "loud"], "answer": 0},
    {"context": "Counting.", "question": "Two plus two is", "choices": ["four", "five"], "answer": 0},
    {"question": "Colour of snow:", "choices": ["hot", "heavy", "white"], "answer": 2},
]
TRAINER = {"name": "ada", "role": "trainer"}


def add_model(session, settings, name: str, seed: int, kind: ModelKind = ModelKind.base, chat: bool = False,
              job_id: int | None = None) -> Model:
    torch.manual_seed(seed)
    model = GPT(config_from_preset("tiny", get_tokenizer("gpt2").vocab_size, block_size=64))
    save_model(model, settings.data_dir / "models" / name, "gpt2", extra={"chat": True} if chat else None)
    row = Model(name=name, kind=kind, tokenizer="gpt2", config=model.config.to_dict(), path=f"models/{name}",
                job_id=job_id)
    session.add(row)
    session.commit()
    return row


def add_dataset(session, settings, kind: DatasetKind, text: str, filename: str) -> Dataset:
    extension = filename.rsplit(".", 1)[1]
    row = Dataset(name=filename, kind=kind, format=extension, path="pending", original_filename=filename,
                  size_bytes=len(text.encode()), stats={})
    session.add(row)
    session.flush()
    row.path = f"datasets/{row.id}/original.{extension}"
    path = settings.data_dir / row.path
    path.parent.mkdir(parents=True)
    path.write_text(text)
    session.commit()
    return row


def add_benchmark(session, settings) -> Dataset:
    return add_dataset(session, settings, DatasetKind.benchmark, "".join(json.dumps(q) + "\n" for q in QUESTIONS),
                       "bench.jsonl")


def add_corpus(session, settings) -> Dataset:
    documents = [f"Document {i}: the cat sat on the mat and looked at {i} birds in the garden." for i in range(80)]
    return add_dataset(session, settings, DatasetKind.text, "\n\n".join(documents), "corpus.txt")


def metrics_by_step(session, job_id: int) -> dict[int, dict[str, float]]:
    steps: dict[int, dict[str, float]] = {}
    for step, name, value in session.execute(select(Metric.step, Metric.name, Metric.value)
                                             .where(Metric.job_id == job_id).order_by(Metric.id)):
        steps.setdefault(step, {})[name] = value
    return steps


def test_evaluate_params_are_checked_against_the_declaration(workbench_env, session):
    base = add_model(session, workbench_env, "base", 0)
    reward = add_model(session, workbench_env, "reward", 1, kind=ModelKind.reward)
    benchmark = add_benchmark(session, workbench_env)
    corpus = add_corpus(session, workbench_env)
    chat = add_dataset(session, workbench_env, DatasetKind.chat, "{}\n", "chat.jsonl")
    cases = [
        ({"dataset_id": benchmark.id}, "model_ids", "is required"),
        ({"model_ids": "1, x", "dataset_id": benchmark.id}, "model_ids", "separated by commas"),
        ({"model_ids": [base.id, base.id], "dataset_id": benchmark.id}, "model_ids", f"lists {base.id} twice"),
        ({"model_ids": list(range(1, 18)), "dataset_id": benchmark.id}, "model_ids", "at most 16"),
        ({"model_ids": [base.id, 999], "dataset_id": benchmark.id}, "model_ids", "no model with id 999"),
        ({"model_ids": [reward.id], "dataset_id": benchmark.id}, "model_ids", "is a reward model"),
        ({"model_ids": [base.id], "dataset_id": chat.id}, "dataset_id", "needs a benchmark or text dataset"),
        ({"model_ids": [base.id], "dataset_id": benchmark.id, "max_batches": 2}, "max_batches",
         "applies to text datasets only"),
        ({"model_ids": [base.id], "dataset_id": corpus.id, "max_questions": 2}, "max_questions",
         "applies to benchmark datasets only"),
        ({"model_ids": [base.id], "dataset_id": benchmark.id, "batch_size": 0}, "batch_size", "positive"),
    ]
    for params, field, words in cases:
        with pytest.raises(JobParamsError) as caught:
            jobs.create_job(session, "evaluate", params)
        assert caught.value.field == field and words in caught.value.message, (params, str(caught.value))
    assert session.scalar(select(func.count()).select_from(Job)) == 0
    # A form sends the ids as text; the stored row holds them as a list, with every default filled in.
    job = jobs.create_job(session, "evaluate", {"model_ids": f"{base.id}", "dataset_id": benchmark.id})
    assert job.kind == "evaluate" and job.params == {"model_ids": [base.id], "dataset_id": benchmark.id,
                                                     "batch_size": 8}


def test_an_evaluate_job_scores_each_model_on_a_benchmark_and_resumes(workbench_env, session):
    base = add_model(session, workbench_env, "base", 0)
    assistant = add_model(session, workbench_env, "assistant", 1, kind=ModelKind.sft, chat=True)
    benchmark = add_benchmark(session, workbench_env)
    job = jobs.create_job(session, "evaluate", {"model_ids": [base.id, assistant.id], "dataset_id": benchmark.id,
                                                "batch_size": 4})
    first = claim(session, job.id)
    # Stopped before its second model (should_stop is asked once per model): the first one's result is kept.
    outcome = evaluate_handler.run(_make_context(session, job.id, first, workbench_env, StopOnQuestion(2)))
    assert outcome.stopped and "after 1 of 2 models" in outcome.summary
    assert set(metrics_by_step(session, job.id)) == {1}

    assert jobs.finish_job(session, job.id, first, JobStatus.queued, log_line="requeued", event="requeued")
    assert execute_job(job.id, claim(session, job.id), workbench_env) == JobStatus.succeeded
    session.expire_all()
    finished = session.get(Job, job.id)
    assert finished.progress == 1.0 and finished.output_model_id is None

    # What a direct call gives, model by model: the base model as plain text, the chat model through the template.
    # Same batch size as the job: a different one pads differently, and some CPUs' matmul kernels then change the
    # last bits of a log-likelihood.
    expected = {model.id: evaluate_benchmark(workbench_env.data_dir / model.path, workbench_env.data_dir /
                                             benchmark.path, EvaluateConfig(batch_size=4), device="cpu")
                for model in (base, assistant)}
    assert [expected[base.id]["chat"], expected[assistant.id]["chat"]] == [False, True]
    written = json.loads((workbench_env.data_dir / finished.run_dir / "results.json").read_text())
    assert written["dataset_id"] == benchmark.id and written["dataset_kind"] == "benchmark"
    assert written["results"] == [{"model_id": model.id, "model": model.name, **expected[model.id]}
                                  for model in (base, assistant)]
    steps = metrics_by_step(session, job.id)
    assert sorted(steps) == [1, 2]  # the resumed attempt scored the second model only: each model's rows once
    for step, model in ((1, base), (2, assistant)):
        assert steps[step]["model_id"] == model.id and steps[step]["questions"] == 3
        for name in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr"):
            assert steps[step][name] == pytest.approx(expected[model.id][name])
    lines = log_lines(session, job.id)
    assert "1 of 2 models already evaluated by an earlier attempt" in lines
    assert lines[-1] == (f"succeeded: 2 models on dataset {benchmark.id}; acc: base {expected[base.id]['acc']:.4f}, "
                         f"assistant {expected[assistant.id]['acc']:.4f}")


def test_an_evaluate_job_on_text_reports_loss_perplexity_and_bits_per_byte(workbench_env, session):
    base = add_model(session, workbench_env, "base", 0)
    corpus = add_corpus(session, workbench_env)
    job = jobs.create_job(session, "evaluate", {"model_ids": [base.id], "dataset_id": corpus.id, "max_batches": 2})
    assert execute_job(job.id, claim(session, job.id), workbench_env) == JobStatus.succeeded
    prepared = prepared_dir_for(workbench_env, corpus.id, "gpt2")  # prepared with the model's tokenizer, cached
    expected = evaluate(workbench_env.data_dir / base.path, prepared, batch_size=8, max_batches=2, device="cpu")
    step = metrics_by_step(session, job.id)[1]
    assert step["model_id"] == base.id
    for name in ("val_loss", "perplexity", "val_bpb", "tokens"):
        assert step[name] == pytest.approx(expected[name])
    assert log_lines(session, job.id)[-1] == f"succeeded: 1 model on dataset {corpus.id}; val_bpb: base " \
                                             f"{expected['val_bpb']:.4f}"


# ----------------------------------------------------------------------------- benchmark uploads

BAD_BENCHMARK_LINES = [  # (the line, the field named, words of the problem)
    ({"choices": ["a", "b"], "answer": 0}, None, "missing question"),
    ({"question": "Q?", "choices": ["a"], "answer": 0}, "choices", "at least 2"),
    ({"question": "Q?", "choices": ["a", 7], "answer": 0}, "choices[1]", "must be a string"),
    ({"question": "Q?", "choices": ["a", "a"], "answer": 0}, "choices[1]", "repeats choices[0]"),
    ({"question": "Q?", "choices": ["a", "b"], "answer": 2}, "answer", "from 0 to 1"),
    ({"question": "Q?", "choices": ["a", "b"], "answer": "0"}, "answer", "whole number"),
    ({"question": "", "choices": ["a", "b"], "answer": 0}, "question", "is empty"),
]


def test_a_benchmark_upload_is_validated_line_by_line_and_stored_whole_or_not_at_all(workbench_env, session):
    from db.models import Role
    from db.users import create_user
    from web.services.common import InvalidInput
    from web.services.datasets import store_dataset_upload

    owner = create_user(session, "ada", "a long enough password", Role.trainer)
    session.commit()
    good = workbench_env.data_dir.parent / "good.jsonl"
    good.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    stored = store_dataset_upload(session, workbench_env, good, "mine.jsonl", None, "benchmark", owner.id).dataset
    assert stored.kind == DatasetKind.benchmark and stored.stats["questions"] == 3
    assert stored.stats["preview"][0] == "Colour of the sky:\n✓ 0. blue\n  1. green\n  2. loud"
    assert stored.stats["choices_histogram"]["max"] == 3
    for line, field, words in BAD_BENCHMARK_LINES:
        bad = workbench_env.data_dir.parent / "bad.jsonl"
        bad.write_text(json.dumps(QUESTIONS[0]) + "\n" + json.dumps(line) + "\n")
        with pytest.raises(InvalidInput) as caught:
            store_dataset_upload(session, workbench_env, bad, "theirs.jsonl", None, "benchmark", owner.id)
        where = "theirs.jsonl, line 2" + (f", field {field}" if field else "")
        assert str(caught.value).startswith(where + ": ") and words in str(caught.value), str(caught.value)
    assert session.scalar(select(func.count()).select_from(Dataset)) == 1  # nothing of the bad files was kept
    assert sorted(p.name for p in (workbench_env.data_dir / "datasets").iterdir()) == [str(stored.id)]


# ----------------------------------------------------------------------------- compare runs

def add_training_run(session, losses: list[float]) -> Job:
    job = Job(kind="pretrain", status=JobStatus.succeeded, params={}, progress=1.0, attempts=1)
    session.add(job)
    session.flush()
    session.add_all(Metric(job_id=job.id, step=10 * (index + 1), name="loss", value=loss)
                    for index, loss in enumerate(losses))
    session.add(Metric(job_id=job.id, step=10 * len(losses), name="val_loss", value=losses[-1] + 0.1))
    session.commit()
    return job


def test_compare_models_lays_their_evaluations_and_curves_side_by_side(workbench_env, session):
    first_run, second_run = add_training_run(session, [5.0, 4.0, 3.5]), add_training_run(session, [6.0, 4.5])
    base = add_model(session, workbench_env, "base", 0, job_id=first_run.id)
    other = add_model(session, workbench_env, "other", 1, job_id=second_run.id)
    imported = add_model(session, workbench_env, "imported", 2)
    benchmark, corpus = add_benchmark(session, workbench_env), add_corpus(session, workbench_env)
    ran = []
    for params in ({"model_ids": [base.id, other.id], "dataset_id": benchmark.id, "max_questions": 2},
                   {"model_ids": [base.id], "dataset_id": corpus.id, "max_batches": 1},
                   {"model_ids": [other.id], "dataset_id": benchmark.id}):  # newer: replaces other's first one
        job = jobs.create_job(session, "evaluate", params)
        assert execute_job(job.id, claim(session, job.id), workbench_env) == JobStatus.succeeded
        ran.append(job.id)

    comparison = compare_models([other.id, base.id, imported.id], session=session, viewer=TRAINER)
    assert [model["name"] for model in comparison["models"]] == ["other", "base", "imported"]
    rows = comparison["evaluations"]
    # Datasets in id order, the models in the order picked; each pair's newest evaluation.
    assert [(row["model"], row["data"], row["job_id"]) for row in rows] == [
        ("other", "bench.jsonl", ran[2]), ("base", "bench.jsonl", ran[0]), ("base", "corpus.txt", ran[1])]
    written = {job_id: json.loads((workbench_env.data_dir / f"runs/{job_id}/results.json").read_text())["results"]
               for job_id in ran}
    assert rows[0]["questions"] == 3 and rows[0]["acc"] == pytest.approx(written[ran[2]][0]["acc"])
    assert rows[1]["questions"] == 2 and rows[1]["acc_norm_stderr"] == pytest.approx(
        written[ran[0]][0]["acc_norm_stderr"])
    assert rows[2]["val_bpb"] == pytest.approx(written[ran[1]][0]["val_bpb"])
    assert comparison["table"] == dict(zip(("headings", "rows"), results_table(rows)))
    assert comparison["table"]["headings"][:4] == ["model", "data", "questions", "acc"]

    curves = {curve["model"]: curve["series"] for curve in comparison["curves"]}
    assert curves["base"]["loss"] == [(10, 5.0), (20, 4.0), (30, 3.5)]
    assert curves["other"]["val_loss"] == [(20, pytest.approx(4.6))]
    assert curves["imported"] == {}

    # The view: one table row per evaluation, one chart panel per dataset (bars with error bars), a line per curve.
    assert comparison_table_html(comparison).count("<tr>") == 1 + 3
    bars = evaluation_figure(comparison)
    assert [ax.get_title() for ax in bars.axes] == ["bench.jsonl", "corpus.txt"]
    from matplotlib.container import BarContainer, ErrorbarContainer

    benchmark_panel = bars.axes[0].containers  # acc then acc_norm: a bar per model, and its error bar
    heights = [list(c.datavalues) for c in benchmark_panel if isinstance(c, BarContainer)]
    assert heights == [[rows[0]["acc"], rows[1]["acc"]], [rows[0]["acc_norm"], rows[1]["acc_norm"]]]
    spans = [[segment[1][1] - segment[0][1] for segment in c.lines[2][0].get_segments()]
             for c in benchmark_panel if isinstance(c, ErrorbarContainer)]
    assert spans == [pytest.approx([2 * rows[0]["acc_stderr"], 2 * rows[1]["acc_stderr"]]),
                     pytest.approx([2 * rows[0]["acc_norm_stderr"], 2 * rows[1]["acc_norm_stderr"]])]
    assert [list(c.datavalues) for c in bars.axes[1].containers] == [[rows[2]["val_bpb"]]]  # bits per byte
    assert sorted(curves_figure(comparison).axes[0].get_legend_handles_labels()[1]) == [
        "base · loss", "base · val loss", "other · loss", "other · val loss"]

    nothing = compare_models([imported.id], session=session, viewer=TRAINER)
    assert nothing["evaluations"] == [] and "No evaluation of imported yet" in comparison_table_html(nothing)
    assert curves_figure(nothing) is None and evaluation_figure(nothing) is None
    with pytest.raises(NotFound, match="model 999 does not exist"):
        compare_models([base.id, 999], session=session, viewer=TRAINER)
    with pytest.raises(PermissionDenied):
        compare_models([base.id], session=session, viewer={"name": "lab", "role": "labeler"})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_models_tab_offers_every_model_to_compare_and_shows_the_comparison(api_settings, session, users):
    import gradio as gr

    from tests.conftest import LABELER
    from tests.conftest import TRAINER as TRAINER_LOGIN
    from web.ui import models_tab

    class Request:  # what the handlers read of gr.Request
        def __init__(self, login):
            self.username = login[0]

    with gr.Blocks() as blocks:
        tab = models_tab.build(api_settings)
    found = {block.fn.__qualname__.split("<locals>.")[-1]: block.fn for block in blocks.fns.values() if block.fn}
    run = add_training_run(session, [5.0, 4.0])
    base = add_model(session, api_settings, "base", 0, job_id=run.id)
    other = add_model(session, api_settings, "other", 1)
    job = jobs.create_job(session, "evaluate", {"model_ids": [base.id, other.id],
                                                "dataset_id": add_benchmark(session, api_settings).id})
    assert execute_job(job.id, claim(session, job.id), api_settings) == JobStatus.succeeded

    *_, compare_picker = tab.refresh_fn(Request(TRAINER_LOGIN))
    assert [value for _, value in compare_picker.choices] == [other.id, base.id]
    table, bars, curves = found["show"]([base.id, other.id], Request(TRAINER_LOGIN))
    assert table.count("<tr>") == 3 and ">base<" in table and ">other<" in table
    assert len(bars.axes) == 1 and len(curves.axes[0].lines) == 2  # base's loss and val loss; other has no run
    table, bars, curves = found["show"]([base.id], Request(LABELER))
    assert "wb-msg-error" in table and "that needs the admin or trainer role" in table, table
    assert bars is None and curves is None
