"""Train ▸ Pretrain tab: the form for a pretraining job, with a live size/time estimate.

Changing any field that shapes the run (preset, tokenizer, block size, batch size, steps) asks
`services.estimate_pretrain` for the parameter count, tokens per step and a rough run time, shown
above the Submit button. Submit calls `services.submit_job(session, "pretrain", params, user)`;
the service validates every field (`InvalidInput` names the field and the problem) and nothing is
queued on error. On success the page switches to the Jobs tab with the new job selected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from web.ui import can_write, current_user, db_session, error_text
from web.ui.plots import field, human_count, human_duration, message_html, stat_cards_html

DEFAULTS = {
    "preset": "tiny",
    "tokenizer": "gpt2",
    "max_steps": 1000,
    "batch_size": 16,
    "block_size": 128,
    "lr": 1e-3,
    "warmup": 100,
    "eval_every": 250,
    "checkpoint_every": 500,
    "seed": 1337,
}
# The form's fields, in the order the handlers receive them.
FIELDS = ["dataset_id", "tokenizer", "preset", "name", "max_steps", "batch_size", "block_size", "lr", "warmup",
          "eval_every", "checkpoint_every", "seed"]
INT_FIELDS = {"dataset_id", "max_steps", "batch_size", "block_size", "warmup", "eval_every", "checkpoint_every",
              "seed"}


def presets() -> list[str]:
    try:
        from llm.model import PRESETS
        return list(PRESETS)
    except ImportError:  # pragma: no cover
        return ["tiny", "small", "gpt2-124m"]


def form_params(values: dict[str, Any]) -> dict[str, Any]:
    """The job params from the form's values: empty fields are left out (the job's defaults apply),
    whole-number fields become ints (gr.Number gives floats), text is stripped."""
    params: dict[str, Any] = {}
    for key in FIELDS:
        value = values.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if isinstance(value, str):
            value = value.strip()
        elif key in INT_FIELDS and isinstance(value, float) and value.is_integer():
            value = int(value)
        params[key] = value
    return params


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
    ]
    note = ""
    if estimate.get("device"):
        util = estimate.get("utilisation")
        note = (f'<div style="font-size:12px;opacity:.65;margin-top:4px">on {estimate["device"]}'
                + (f", assuming {util:.0%} of the measured peak FLOP/s" if isinstance(util, (int, float)) else "")
                + "; evaluation and data loading not counted</div>")
    return '<div id="pt-estimate-cards">' + stat_cards_html(cards) + note + "</div>"


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

    def wire(self, blocks: gr.Blocks, page: gr.Tab) -> None:
        dropdowns = [self.dataset, self.tokenizer]
        blocks.load(self.refresh_choices, dropdowns, dropdowns, api_visibility="private")
        blocks.load(*self.estimate, show_progress="hidden", api_visibility="private")
        page.select(self.refresh_choices, dropdowns, dropdowns, api_visibility="private")

    def refresh_choices(self, current_dataset, current_tokenizer):
        from llm.tokenizer import list_tokenizers
        from web import services

        with db_session(self.settings) as session:
            datasets = dataset_choices(services.list_datasets(kind="text", session=session))
        ids = [value for _, value in datasets]
        dataset_value = current_dataset if current_dataset in ids else (ids[0] if ids else None)
        tokenizers = tokenizer_choices(list_tokenizers(self.settings.data_dir))
        names = [value for _, value in tokenizers]
        tokenizer_value = current_tokenizer if current_tokenizer in names else DEFAULTS["tokenizer"]
        return (gr.Dropdown(choices=datasets, value=dataset_value),
                gr.Dropdown(choices=tokenizers, value=tokenizer_value))

    def after_submit(self, tabs: gr.Tabs, jobs_tab_id: str, on_job: Any) -> None:
        """Once a job is queued: switch to the Jobs tab and let it show the job (`on_job(job_id)`)."""
        def jump(job_id):
            if not job_id:
                return gr.skip()
            return gr.Tabs(selected=jobs_tab_id)

        # Select the job first, then switch: opening the tab refreshes it with the new selection.
        self.submit_event.success(*on_job(self.job_id), api_visibility="private").then(
            jump, [self.job_id], [tabs], api_visibility="private")


def build(settings) -> PretrainTab:
    from web import services

    gr.Markdown("Pretrain a base model on a text dataset. The data is tokenized on the worker the first time "
                "a dataset/tokenizer pair is used; the job shows up in **Jobs**.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            with gr.Row():
                dataset = gr.Dropdown(label="Dataset (text corpus)", choices=[], elem_id="pt-dataset")
                tokenizer = gr.Dropdown(label="Tokenizer", choices=[(DEFAULTS["tokenizer"], DEFAULTS["tokenizer"])],
                                        value=DEFAULTS["tokenizer"], elem_id="pt-tokenizer")
                preset = gr.Dropdown(label="Model preset (tiny: CPU-sized)", choices=presets(),
                                     value=DEFAULTS["preset"], elem_id="pt-preset")
            with gr.Row():
                max_steps = gr.Number(DEFAULTS["max_steps"], label="Max steps", precision=0,
                                      elem_id="pt-max-steps")
                batch_size = gr.Number(DEFAULTS["batch_size"], label="Batch size", precision=0,
                                       elem_id="pt-batch-size")
                block_size = gr.Number(DEFAULTS["block_size"], label="Block size (context)", precision=0,
                                       elem_id="pt-block-size")
                lr = gr.Number(DEFAULTS["lr"], label="Learning rate", elem_id="pt-lr")
            with gr.Row():
                warmup = gr.Number(DEFAULTS["warmup"], label="Warmup steps", precision=0,
                                   elem_id="pt-warmup")
                eval_every = gr.Number(DEFAULTS["eval_every"], label="Eval every (0 = at the end)", precision=0,
                                       elem_id="pt-eval-every")
                checkpoint_every = gr.Number(DEFAULTS["checkpoint_every"], label="Checkpoint every", precision=0,
                                             elem_id="pt-checkpoint-every")
                seed = gr.Number(DEFAULTS["seed"], label="Seed", precision=0, elem_id="pt-seed")
            name = gr.Textbox(label="Model name (optional)", placeholder="pretrain-<job id>", elem_id="pt-name")
        with gr.Column(scale=2, min_width=300):
            gr.Markdown("#### Size and time")
            estimate = gr.HTML(elem_id="pt-estimate")
            submit = gr.Button("Submit pretraining job", variant="primary", elem_id="pt-submit")
            result = gr.HTML(elem_id="pt-result")
            job_id = gr.Number(visible=False, precision=0)

    inputs = [dataset, tokenizer, preset, name, max_steps, batch_size, block_size, lr, warmup, eval_every,
              checkpoint_every, seed]

    def values_of(args) -> dict[str, Any]:
        return dict(zip(FIELDS, args))

    def do_estimate(*args):
        params = form_params(values_of(args))
        try:
            return estimate_html(services.estimate_pretrain(params, data_dir=settings.data_dir))
        except (services.ServiceError, ValueError) as error:
            return estimate_html(None, error_text(error))

    gr.on([preset.change, tokenizer.change, max_steps.change, batch_size.change, block_size.change],
          do_estimate, inputs, estimate, trigger_mode="always_last", show_progress="hidden", api_visibility="private")

    def do_submit(dataset_id, tokenizer_name, preset_name, model_name, steps, batch, block, lr_value, warmup_steps,
                  eval_steps, checkpoint_steps, seed_value, request: gr.Request):
        params = form_params(values_of([dataset_id, tokenizer_name, preset_name, model_name, steps, batch, block,
                                        lr_value, warmup_steps, eval_steps, checkpoint_steps, seed_value]))
        user = current_user(settings, request)
        if not can_write(user):
            return message_html(f"Your role ({user['role']}) cannot submit jobs.", "error"), None
        if "dataset_id" not in params:
            return message_html("Choose a dataset first (upload one in the Datasets tab).", "error"), None
        try:
            with db_session(settings) as session:
                job = services.submit_job(session, "pretrain", params, user["name"] if user else None)
                new_id = job.id
        except (services.ServiceError, ValueError) as error:
            # InvalidInput names the field ("max_steps: must be a positive whole number, got 0").
            return message_html(f"Not submitted — {error_text(error)}", "error"), None
        return message_html(f"Job #{new_id} queued. Follow it in the Jobs tab.", "ok"), new_id

    submit_event = submit.click(do_submit, inputs, [result, job_id], concurrency_limit=2, api_visibility="private")
    return PretrainTab(settings=settings, dataset=dataset, tokenizer=tokenizer, submit_event=submit_event,
                       job_id=job_id, estimate=(do_estimate, inputs, estimate))
