"""Lineage and report cards (web/services/lineage.py): a reward and a DPO model trained from an SFT model show
the dataset, labeling project and arena votes that made them, and their cards show what their runs measured."""

from __future__ import annotations

import json

import pytest
import torch

from db.models import Job, JobStatus, Metric, Model, ModelKind
from tests.test_preference_jobs import labeled_project
from tests.test_sft_job import add_base_model
from web.services.lineage import model_lineage, report_card


def add_model(session, name, kind, parent, job):
    row = Model(name=name, kind=kind, tokenizer="gpt2", config=parent.config, path=f"models/{name}",
                parent_model_id=parent.id, job_id=job.id)
    session.add(row)
    session.commit()
    return row


def add_job(session, settings, kind, input_model, **extra):
    job = Job(kind=kind, status=JobStatus.succeeded, params={}, progress=1.0, attempts=1, cancel_requested=False,
              input_model_id=input_model.id, **extra)
    session.add(job)
    session.flush()
    job.run_dir = f"runs/{job.id}"
    (settings.data_dir / job.run_dir).mkdir(parents=True)
    session.commit()
    return job


def test_the_graph_and_the_cards(workbench_env, session):
    base = add_base_model(session, workbench_env)
    sft_job = add_job(session, workbench_env, "sft", base)
    sft = add_model(session, "chat", ModelKind.sft, base, sft_job)
    project = labeled_project(session)
    dpo_job = add_job(session, workbench_env, "dpo", sft)
    (workbench_env.data_dir / dpo_job.run_dir / "pairs_sources.json").write_text(json.dumps(
        {"counts": {"label": 2, "arena": 3}, "project_ids": [project.id], "arena": True}))
    # The run's report (llm/dpo.py) holds the figures of the weights it kept: a flag at step 4 threw away the last
    # step's, whose metric (0.5) the card must not show.
    (workbench_env.data_dir / dpo_job.run_dir / "dpo_report.json").write_text(json.dumps({
        "val_rewards/accuracies": 0.875, "kl": 0.25, "kl_per_answer": 2.5, "held_out": True,
        "evaluations": [{"step": 2}, {"step": 4}], "flag": {"step": 4, "stopped": True},
        "degeneration": "degeneration flagged at step 4: KL ...; kept the weights of step 2",
        "samples": [{"prompt": "What should I do?", "answer": "Send it kindly."}]}))
    session.add_all([Metric(job_id=dpo_job.id, step=4, name="val_rewards/accuracies", value=0.5),
                     Metric(job_id=dpo_job.id, step=2, name="val_rewards/accuracies", value=0.875)])
    session.commit()
    dpo = add_model(session, "chat-dpo", ModelKind.dpo, sft, dpo_job)

    graph = model_lineage(workbench_env, sft.id, session=session)
    labels = {node["id"]: node["label"] for node in graph["nodes"]}
    edges = {(edge["from"], edge["to"]) for edge in graph["edges"]}
    assert f"model:{base.id}" in labels and f"model:{dpo.id}" in labels  # ancestors and descendants
    assert (f"model:{sft.id}", f"job:{dpo_job.id}") in edges and (f"job:{dpo_job.id}", f"model:{dpo.id}") in edges
    assert (f"project:{project.id}", f"job:{dpo_job.id}") in edges and ("arena", f"job:{dpo_job.id}") in edges
    assert labels[f"project:{project.id}"] == "labels: p"
    assert next(n for n in graph["nodes"] if n["id"] == f"model:{sft.id}")["selected"]

    card = dict(report_card(workbench_env, dpo.id, session=session))
    assert card["DPO held-out preference accuracy"] == "87.5%"  # the kept weights', not the last step's
    assert card["KL from the policy it started from"] == "0.250 nats per token (2.50 per answer)"
    assert card["degeneration watch"].startswith("degeneration flagged at step 4")
    assert card["sample: What should I do?"] == "Send it kindly."
    from llm.model import GPT, GPTConfig

    expected = sum(p.numel() for p in GPT(GPTConfig.from_dict(base.config)).parameters())
    assert card["parameters"] == f"{expected:,}"


def test_the_graph_is_drawn_left_to_right():
    from web.ui.lineage_view import layers, lineage_figure

    graph = {"nodes": [{"id": "dataset:1", "type": "dataset", "label": "chats"},
                       {"id": "model:1", "type": "model", "label": "base"},
                       {"id": "job:2", "type": "job", "label": "job #2 sft"},
                       {"id": "model:2", "type": "model", "label": "chat", "selected": True}],
             "edges": [{"from": "dataset:1", "to": "job:2"}, {"from": "model:1", "to": "job:2"},
                       {"from": "job:2", "to": "model:2"}]}
    assert layers(graph) == {"dataset:1": 0, "model:1": 0, "job:2": 1, "model:2": 2}
    figure = lineage_figure(graph)
    texts = {text.get_text() for text in figure.axes[0].texts}
    assert {"chats", "base", "job #2 sft", "chat"} <= texts


def test_the_models_tab_shows_the_card_and_the_graph(workbench_env, session):
    import gradio as gr

    from web.ui.models_tab import build

    base = add_base_model(session, workbench_env)
    sft_job = add_job(session, workbench_env, "sft", base)
    session.add(Metric(job_id=sft_job.id, step=3, name="val_loss", value=1.25))
    session.commit()
    sft = add_model(session, "chat", ModelKind.sft, base, sft_job)
    with gr.Blocks() as blocks:
        build(workbench_env)
    show = next(fn.fn for fn in blocks.fns.values() if fn.fn is not None and fn.fn.__name__ == "show_model")
    card, figure, text = show(sft.id)
    assert f"job #{sft_job.id} sft → chat (sft)" in text
    assert "validation loss" in card and "1.2500" in card
    assert {"chat (sft)", "tiny-base (base)", f"job #{sft_job.id} sft"} <= {t.get_text() for t in figure.axes[0].texts}
