"""Train ▸ Fine-tune tab: the form for an SFT job (LoRA or all weights), with a size/time/memory estimate.

The base model and the chat dataset are chosen from the database; every other field is derived from
the `sft` kind's declaration (`worker/kinds/sft.py`, `web/ui/job_form.py`), so the form offers exactly
the defaults and bounds the worker applies; notes under the fields say how the schedule fits max_steps and
the estimate warns when the workers have less memory than the run needs. The dataset is never chosen for
the person. Submit goes through `services.submit_job` like every
other job; on success the page switches to Jobs with the new job selected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from db.models import JobKind
from web.ui import db_session, error_text, job_form
from web.ui.plots import field, human_bytes, human_count, human_duration, message_html, stat_cards_html
from worker.kinds import KINDS

SPEC = KINDS[JobKind.sft]
CHOOSERS = ("model_id", "dataset_id")
# The settings that change the estimate.
SHAPING = ("full", "lora_r", "lora_targets", "max_steps", "batch_size", "block_size", "grad_accum")


def model_choices(models: list[dict]) -> list[tuple[str, int]]:
    return [(f"#{field(m, 'id')} · {field(m, 'name')} ({field(m, 'kind')})", int(field(m, "id"))) for m in models]


def chat_dataset_choices(datasets: list[dict]) -> list[tuple[str, int]]:
    choices = []
    for d in datasets:
        count = (field(d, "stats") or {}).get("conversations")
        label = f"#{field(d, 'id')} · {field(d, 'name')}" + (f" ({count:,} conversations)"
                                                            if isinstance(count, int) else "")
        choices.append((label, int(field(d, "id"))))
    return choices


def estimate_html(estimate: dict | None, error: str | None = None) -> str:
    if error:
        return message_html(f"Estimate unavailable: {error}", "warn")
    if not estimate:
        return message_html("Choose a model to see the size of the run.", "info")
    trainable, total = estimate["trainable_params"], estimate["params_total"]
    cards = [
        ("trainable parameters", f"{human_count(trainable)} ({trainable / max(total, 1):.2%})"),
        ("tokens / step", f"{estimate['tokens_per_step']:,}"),
        ("estimated time", "~" + human_duration(estimate["est_seconds"])),
        ("peak memory", "~" + human_bytes(estimate["memory_bytes"])),
    ]
    note = (f'<div style="font-size:12px;opacity:.65;margin-top:4px">{human_count(total)} parameters in the model; '
            f'on {estimate["device"]}, assuming {estimate["utilisation"]:.0%} of the measured peak FLOP/s; '
            f'rough figures for planning</div>')
    return ('<div id="ft-estimate-cards">' + stat_cards_html(cards) + note + "</div>"
            + job_form.memory_note_html(estimate))


@dataclass
class FinetuneTab:
    settings: Any
    model: gr.Dropdown
    dataset: gr.Dropdown
    submit_event: Any
    job_id: gr.Number

    def wire(self, blocks: gr.Blocks, page: gr.Tab) -> None:
        dropdowns = [self.model, self.dataset]
        blocks.load(self.refresh_choices, dropdowns, dropdowns, api_visibility="private")
        page.select(self.refresh_choices, dropdowns, dropdowns, api_visibility="private")

    def refresh_choices(self, current_model, current_dataset):
        from web import services

        with db_session(self.settings) as session:
            models = model_choices([m for m in services.list_models(session=session)
                                    if m["kind"] in {kind.value for kind in SPEC.model_kinds}])
            datasets = chat_dataset_choices(services.list_datasets(kind="chat", session=session))

        ids = [value for _, value in models]
        model_value = current_model if current_model in ids else (ids[0] if ids else None)
        # The newest model is offered (the estimate needs one); the dataset is never chosen for the person.
        return (gr.Dropdown(choices=models, value=model_value), job_form.dataset_dropdown(datasets, current_dataset))

    def after_submit(self, tabs: gr.Tabs, jobs_tab_id: str, on_job: Any) -> None:
        job_form.jump_to_jobs_after(self.submit_event, self.job_id, tabs, jobs_tab_id, on_job)


def build(settings) -> FinetuneTab:
    from web import services

    gr.Markdown(SPEC.description + " LoRA trains a small adapter that loads onto its base model; "
                "**all weights** writes a full model.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            with gr.Row():
                model = gr.Dropdown(label="Base model (pretrained, imported or an earlier SFT model)", choices=[],
                                    elem_id="ft-model")
                dataset = gr.Dropdown(label="Chat dataset", choices=[], value=None,
                                      info="required: the conversations to learn from", elem_id="ft-dataset")
            fields = job_form.build_fields(SPEC, "ft", exclude=CHOOSERS)
            schedule = gr.HTML(elem_id="ft-schedule")
        with gr.Column(scale=2, min_width=300):
            estimate, submit, result, job_id = job_form.submit_column("ft", "Size, time and memory", "Submit fine-tuning job")

    names = [*CHOOSERS, *fields]
    inputs = [model, dataset, *fields.values()]

    def params_of(args) -> dict[str, Any]:
        return job_form.form_params(SPEC, dict(zip(names, args)))

    def do_estimate(*args):
        params = params_of(args)
        if "model_id" not in params:
            return estimate_html(None)
        try:
            return estimate_html(services.estimate_run("sft", params))
        except (services.ServiceError, ValueError) as error:
            return estimate_html(None, error_text(error))

    job_form.wire_schedule_notes(SPEC, fields, params_of, inputs, schedule)
    gr.on([model.change, *(fields[name].change for name in SHAPING if name in fields)], do_estimate, inputs,
          estimate, trigger_mode="always_last", show_progress="hidden", api_visibility="private")

    # Inputs as a set: the handler gets {component: value} (Gradio injects `request` only after
    # positional parameters, so no *args here).
    def do_submit(values: dict, request: gr.Request):
        args = [values[component] for component in inputs]
        return job_form.submit_from_form(settings, "sft", params_of(args), request, {
            "model_id": "Choose a base model first (pretrain one, or import GPT-2 in Models).",
            "dataset_id": "Chat dataset: none is chosen. Choose the conversations to learn from (upload them in "
                          "Datasets with the kind 'chat').",
        })

    submit_event = submit.click(do_submit, set(inputs), [result, job_id], concurrency_limit=2,
                                api_visibility="private")
    return FinetuneTab(settings=settings, model=model, dataset=dataset, submit_event=submit_event, job_id=job_id)
