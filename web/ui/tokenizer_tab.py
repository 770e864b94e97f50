"""Train ▸ Tokenizer tab: the form for a `train_tokenizer` job (a byte-level BPE trained on a text dataset).

The step between data and pretraining that the header promises ("data → tokenizer → pretrain ..."). The
dataset is chosen from the database (never for the person); the other fields (vocab_size, name) are derived
from the kind's declaration (`worker/kinds/train_tokenizer.py`, `web/ui/job_form.py`). Submit goes through
`services.submit_job` like every other job; once the job succeeds, the tokenizer is offered in
Train ▸ Pretrain's tokenizer choice (that tab refreshes its choices when opened). The tokenizers that exist
are listed here too, so a name already taken is seen before submit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from db.models import JobKind
from web.ui import db_session, job_form
from web.ui.pretrain_tab import dataset_choices
from worker.kinds import KINDS

SPEC = KINDS[JobKind.train_tokenizer]
CHOOSERS = ("dataset_id",)


def tokenizers_html(tokenizers: list[dict]) -> str:
    """The tokenizers Pretrain can use now: name, built-in or trained, vocabulary size."""
    from html import escape

    items = [f"<b>{escape(t['name'])}</b> ({escape(t.get('kind', 'builtin'))}, "
             + (f"{t['vocab_size']:,} tokens)" if isinstance(t.get("vocab_size"), int) else "size unknown)")
             for t in tokenizers]
    return ('<div id="tok-list" style="font-size:13px">Tokenizers available to Pretrain: '
            + "; ".join(items) + "</div>")


@dataclass
class TokenizerTab:
    settings: Any
    dataset: gr.Dropdown
    existing: gr.HTML
    submit_event: Any
    job_id: gr.Number

    def wire(self, blocks: gr.Blocks, *pages: gr.Tab) -> None:
        """Choices and the tokenizer list are refreshed on load and whenever one of `pages` is opened."""
        blocks.load(self.refresh, [self.dataset], [self.dataset, self.existing], api_visibility="private")
        for page in pages:
            page.select(self.refresh, [self.dataset], [self.dataset, self.existing], api_visibility="private")

    def refresh(self, current_dataset):
        from llm.tokenizer import list_tokenizers
        from web import services

        with db_session(self.settings) as session:
            datasets = dataset_choices(services.list_datasets(kind="text", session=session))
        return (job_form.dataset_dropdown(datasets, current_dataset),
                tokenizers_html(list_tokenizers(self.settings.data_dir)))

    def after_submit(self, tabs: gr.Tabs, jobs_tab_id: str, on_job: Any) -> None:
        job_form.jump_to_jobs_after(self.submit_event, self.job_id, tabs, jobs_tab_id, on_job)


def build(settings) -> TokenizerTab:
    gr.Markdown(SPEC.description + " When the job has succeeded, choose the tokenizer by its name in "
                "**Pretrain**. The job shows up in **Jobs**.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            dataset = gr.Dropdown(label="Dataset (text corpus)", choices=[], value=None,
                                  info="required: the text the tokenizer learns its merges from",
                                  elem_id="tok-dataset")
            fields = job_form.build_fields(SPEC, "tok", exclude=CHOOSERS)
            existing = gr.HTML(elem_id="tok-existing")
        with gr.Column(scale=2, min_width=300):
            _estimate, submit, result, job_id = job_form.submit_column("tok", "Train a tokenizer",
                                                                       "Submit tokenizer job")

    names = [*CHOOSERS, *fields]
    inputs = [dataset, *fields.values()]

    # Inputs as a set: the handler gets {component: value} (Gradio injects `request` only after
    # positional parameters, so no *args here).
    def do_submit(values: dict, request: gr.Request):
        params = job_form.form_params(SPEC, dict(zip(names, (values[component] for component in inputs))))
        return job_form.submit_from_form(settings, SPEC.kind.value, params, request, {
            "dataset_id": "Dataset: none is chosen. Choose the text corpus to learn from (upload one in the "
                          "Datasets tab)."})

    submit_event = submit.click(do_submit, set(inputs), [result, job_id], concurrency_limit=2,
                                api_visibility="private")
    return TokenizerTab(settings=settings, dataset=dataset, existing=existing, submit_event=submit_event,
                        job_id=job_id)
