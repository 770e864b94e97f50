"""Train ▸ Pretrain tab: the form for a pretraining job, with a live size/time estimate.

Changing any field that shapes the run (preset, tokenizer, block size, batch size, steps) asks
`services.estimate_pretrain` for the parameter count, tokens per step and a rough run time, shown
above the Submit button with its peak memory (and a warning when the workers have less). Under the
fields, notes say how warmup / eval_every / checkpoint_every fit max_steps before submit. The dataset is
never chosen for the person: an empty choice is refused with a message. Submit calls `services.submit_job(session, "pretrain", params, user)`;
the service validates every field (`InvalidInput` names the field and the problem) and nothing is
queued on error. On success the page switches to the Jobs tab with the new job selected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from db.models import JobKind
from web.ui import db_session, error_text, job_form
from web.ui.plots import field, human_bytes, human_count, human_duration, message_html, stat_cards_html
from worker.kinds import KINDS

SPEC = KINDS[JobKind.pretrain]
# Built by the tab itself (their choices come from the database / the model code); the rest of the
# form is derived from the kind's declaration (web/ui/job_form.py).
CHOOSERS = ("dataset_id", "tokenizer", "preset")


def presets() -> list[str]:
    from llm.model import PRESETS

    return list(PRESETS)


def form_params(values: dict[str, Any]) -> dict[str, Any]:
    """The job params from the form's values (see job_form.form_params)."""
    return job_form.form_params(SPEC, values)


def estimate_html(estimate: dict | None, error: str | None = None) -> str:
    if error:
        return message_html(f"Estimate unavailable: {error}", "warn")
    if not estimate:
        return ""
    cards = [
        ("parameters", human_count(estimate.get("params_count"))),
        ("tokens / step", f"{estimate.get('tokens_per_step', 0):,}"),
        ("total tokens", human_count(estimate.get("total_tokens"))),
        ("estimated time", "~" + human_duration(estimate.get("est_seconds"))),
        ("peak memory", "~" + human_bytes(estimate.get("memory_bytes"))),
    ]
    note = ""
    if estimate.get("device"):
        util = estimate.get("utilisation")
        note = (f'<div style="font-size:12px;opacity:.65;margin-top:4px">on {estimate["device"]}'
                + (f", assuming {util:.0%} of the measured peak FLOP/s" if isinstance(util, (int, float)) else "")
                + "; evaluation and data loading not counted</div>")
    return ('<div id="pt-estimate-cards">' + stat_cards_html(cards) + note + "</div>"
            + job_form.memory_note_html(estimate))


def dataset_choices(datasets: list[dict]) -> list[tuple[str, int]]:
    choices = []
    for d in datasets:
        docs = (field(d, "stats") or {}).get("documents")
        label = f"#{field(d, 'id')} · {field(d, 'name')}" + (f" ({docs:,} docs)" if isinstance(docs, int) else "")
        choices.append((label, int(field(d, "id"))))
    return choices


def tokenizer_choices(tokenizers: list[dict]) -> list[tuple[str, str]]:
    return [(f"{t['name']} ({t.get('kind', 'builtin')}, vocab {t.get('vocab_size', '?'):,})"
             if isinstance(t.get("vocab_size"), int) else t["name"], t["name"]) for t in tokenizers]


@dataclass
class PretrainTab:
    settings: Any
    dataset: gr.Dropdown
    tokenizer: gr.Dropdown
    submit_event: Any
    job_id: gr.Number
    estimate: tuple  # (handler, inputs, output) for the first estimate when the page opens

    def wire(self, blocks: gr.Blocks, *pages: gr.Tab) -> None:
        """Choices are refreshed on load and whenever one of `pages` (Train, Train ▸ Pretrain) is opened, so a
        dataset uploaded or a tokenizer trained meanwhile is offered."""
        dropdowns = [self.dataset, self.tokenizer]
        blocks.load(self.refresh_choices, dropdowns, dropdowns, api_visibility="private")
        blocks.load(*self.estimate, show_progress="hidden", api_visibility="private")
        for page in pages:
            page.select(self.refresh_choices, dropdowns, dropdowns, api_visibility="private")

    def refresh_choices(self, current_dataset, current_tokenizer):
        from llm.tokenizer import list_tokenizers
        from web import services

        with db_session(self.settings) as session:
            datasets = dataset_choices(services.list_datasets(kind="text", session=session))
        tokenizers = tokenizer_choices(list_tokenizers(self.settings.data_dir))
        names = [value for _, value in tokenizers]
        tokenizer_value = current_tokenizer if current_tokenizer in names else SPEC.params["tokenizer"].default
        return (job_form.dataset_dropdown(datasets, current_dataset),
                gr.Dropdown(choices=tokenizers, value=tokenizer_value))

    def after_submit(self, tabs: gr.Tabs, jobs_tab_id: str, on_job: Any) -> None:
        job_form.jump_to_jobs_after(self.submit_event, self.job_id, tabs, jobs_tab_id, on_job)


def build(settings) -> PretrainTab:
    from web import services

    gr.Markdown(SPEC.description + " The job shows up in **Jobs**.")
    default_tokenizer = SPEC.params["tokenizer"].default
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            with gr.Row():
                dataset = gr.Dropdown(label="Dataset (text corpus)", choices=[], value=None,
                                      info="required: the corpus to train on", elem_id="pt-dataset")
                tokenizer = gr.Dropdown(label="Tokenizer", choices=[(default_tokenizer, default_tokenizer)],
                                        value=default_tokenizer, elem_id="pt-tokenizer")
                preset = gr.Dropdown(label="Model preset (tiny: CPU-sized)", choices=presets(),
                                     value=SPEC.params["preset"].default, elem_id="pt-preset")
            fields = job_form.build_fields(SPEC, "pt", exclude=CHOOSERS)
            schedule = gr.HTML(elem_id="pt-schedule")
        with gr.Column(scale=2, min_width=300):
            estimate, submit, result, job_id = job_form.submit_column("pt", "Size and time", "Submit pretraining job")

    names = [*CHOOSERS, *fields]
    inputs = [dataset, tokenizer, preset, *fields.values()]

    def values_of(args) -> dict[str, Any]:
        return dict(zip(names, args))

    def do_estimate(*args):
        params = form_params(values_of(args))
        try:
            return estimate_html(services.estimate_run("pretrain", params))
        except (services.ServiceError, ValueError) as error:
            return estimate_html(None, error_text(error))

    job_form.wire_schedule_notes(SPEC, fields, lambda args: form_params(values_of(args)), inputs, schedule)
    shaping = [preset, tokenizer, *(fields[name] for name in ("max_steps", "batch_size", "block_size", "grad_accum",
                                                              "n_layer", "n_head", "n_embd", "device", "dtype"))]
    gr.on([component.change for component in shaping], do_estimate, inputs, estimate, trigger_mode="always_last",
          show_progress="hidden", api_visibility="private")

    # Inputs as a set: the handler gets {component: value} (Gradio injects `request` only after
    # positional parameters, so no *args here).
    def do_submit(values: dict, request: gr.Request):
        args = [values[component] for component in inputs]
        return job_form.submit_from_form(settings, "pretrain", form_params(values_of(args)), request,
                                         {"dataset_id": "Dataset: none is chosen. Choose the text corpus to train on (upload one in the Datasets tab)."})

    submit_event = submit.click(do_submit, set(inputs), [result, job_id], concurrency_limit=2,
                                api_visibility="private")
    return PretrainTab(settings=settings, dataset=dataset, tokenizer=tokenizer, submit_event=submit_event,
                       job_id=job_id, estimate=(do_estimate, inputs, estimate))
