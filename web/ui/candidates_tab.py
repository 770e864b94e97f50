"""Train ▸ Candidates: the form for a `generate` job, K answers per prompt of a prompts dataset from one or two
models, which a labeling project (Label ▸ Projects) then pairs for people to compare.

The prompts dataset and the models are chosen from the database; every other field comes from the kind's
declaration (worker/kinds/generate.py) through `web/ui/job_form.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from db.models import JobKind
from web.ui import db_session, job_form
from worker.kinds import KINDS

SPEC = KINDS[JobKind.generate]
CHOOSERS = ("dataset_id", "model_id", "model_id_b")
NO_MODEL = 0  # model B's "none" choice


@dataclass
class CandidatesTab:
    settings: Any
    dataset: gr.Dropdown
    model: gr.Dropdown
    model_b: gr.Dropdown
    submit_event: Any
    job_id: gr.Number

    def wire(self, blocks: gr.Blocks, page) -> None:
        choosers = [self.dataset, self.model, self.model_b]
        blocks.load(self.refresh_choices, choosers, choosers, api_visibility="private")
        page.select(self.refresh_choices, choosers, choosers, api_visibility="private")

    def refresh_choices(self, current_dataset, current_model, current_model_b):
        from web import services

        with db_session(self.settings) as session:
            datasets = [(f"#{d['id']} · {d['name']} ({(d.get('stats') or {}).get('prompts', '?')} prompts)", d["id"])
                        for d in services.list_datasets(kind="prompts", session=session)]
            models = [(f"#{m['id']} · {m['name']} ({m['kind']})", m["id"]) for m in services.list_models(session=session)
                      if m["kind"] in {kind.value for kind in SPEC.model_kinds}]

        def offer(current, choices, empty=None):
            """The choices, leaving the value alone unless what it names has gone: this answer can land after
            a pick the person made meanwhile (`current` is from before), and must not undo it."""
            ids = [value for _, value in choices]
            if current in ids or current is None or current == empty:
                return gr.Dropdown(choices=choices)
            return gr.Dropdown(choices=choices, value=empty)

        with_none = [("(none: model A gives every answer)", NO_MODEL)] + models
        return offer(current_dataset, datasets), offer(current_model, models), offer(current_model_b, with_none, NO_MODEL)

    def after_submit(self, tabs: gr.Tabs, jobs_tab_id: str, on_job: Any) -> None:
        job_form.jump_to_jobs_after(self.submit_event, self.job_id, tabs, jobs_tab_id, on_job)


def build(settings) -> CandidatesTab:
    gr.Markdown(SPEC.description + " Pair the answers for people to compare in Label ▸ Projects.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            dataset = gr.Dropdown(label="Prompts dataset", choices=[], elem_id="gen-dataset")
            with gr.Row():
                model = gr.Dropdown(label="Model A", choices=[], elem_id="gen-model")
                model_b = gr.Dropdown(label="Model B (optional)", choices=[("(none: model A gives every answer)", NO_MODEL)],
                                      value=NO_MODEL, elem_id="gen-model-b")
            fields = job_form.build_fields(SPEC, "gen", exclude=CHOOSERS)
        with gr.Column(scale=2, min_width=300):
            _note, submit, result, job_id = job_form.submit_column("gen", "Candidates", "Submit generate job")

    names = [*CHOOSERS, *fields]
    inputs = [dataset, model, model_b, *fields.values()]

    def do_submit(values: dict, request: gr.Request):
        chosen = dict(zip(names, [values[component] for component in inputs]))
        chosen["model_id_b"] = chosen["model_id_b"] or None
        return job_form.submit_from_form(settings, SPEC.kind.value, job_form.form_params(SPEC, chosen), request, {
            "dataset_id": "Choose a prompts dataset first (upload one in Datasets with the kind 'prompts').",
            "model_id": "Choose model A first (fine-tune one in Train ▸ Fine-tune).",
        })

    submit_event = submit.click(do_submit, set(inputs), [result, job_id], concurrency_limit=2,
                                api_visibility="private")
    return CandidatesTab(settings=settings, dataset=dataset, model=model, model_b=model_b,
                         submit_event=submit_event, job_id=job_id)
