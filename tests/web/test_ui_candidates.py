"""Train ▸ Candidates without a browser: the form submits a generate job with the chosen prompts, models and
settings, and says what is missing when nothing is chosen."""

from __future__ import annotations

import gradio as gr
from sqlalchemy import select

from db.models import DatasetKind, Job
from tests.conftest import TRAINER
from tests.support.records import add_chat_model, add_dataset
from web.ui.train_tab import NONE as NO_MODEL, build
from worker.kinds import KINDS


class FakeRequest:
    def __init__(self, username):
        self.username = username


def test_submitting_the_candidates_form(api_settings, users, session):
    chat = add_chat_model(session, api_settings, "chat-a", 1)
    prompts = add_dataset(session, api_settings, DatasetKind.prompts, ['{"prompt": "Hi?"}', '{"prompt": "Why?"}'],
                          "questions")
    with gr.Blocks() as blocks:
        tab = build(api_settings, KINDS["generate"])
    handler = next(fn for fn in blocks.fns.values() if fn.fn is not None and fn.fn.__name__ == "do_submit")
    values = {component: getattr(component, "value", None) for component in handler.inputs}
    values[tab.inputs["dataset_id"]], values[tab.inputs["model_id"]], values[tab.inputs["model_id_b"]] = \
        None, chat.id, NO_MODEL
    message, job_id = handler.fn(values, FakeRequest(TRAINER[0]))
    assert job_id is None and "Choose a prompts dataset first" in message
    values[tab.inputs["dataset_id"]] = prompts.id
    message, job_id = handler.fn(values, FakeRequest(TRAINER[0]))
    assert job_id, message
    job = session.scalar(select(Job).where(Job.id == job_id))
    assert job.kind == "generate" and job.params["k"] == 2 and "model_id_b" not in job.params
    assert job.dataset_id == prompts.id and job.input_model_id == chat.id
