"""Train forms derived from a job kind's declaration (`worker.kinds`): one input per declared setting.

`web/ui/train_tab.py` lays out a kind's sub-tab: its choosers (dataset, model, tokenizer: they need choices from
the database) and, from `build_fields`, the rest. Each field's type, default, bounds, label and help text come from
the kind's `Setting`, so a form can never offer another default than the worker applies. The
settings a kind lists in `form_fields` come first; the others marked `advanced` go in an
"Advanced" accordion. `form_params` turns what the browser sends back into job params.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from llm.params import Setting
from llm.train_config import SCHEDULE_FIELDS, fit_schedule_to_steps, schedule_problems
from worker.kinds import JobKindSpec

FIELDS_PER_ROW = 4
SCHEDULE_NAMES = ("max_steps", *SCHEDULE_FIELDS)  # the settings the schedule notes read


def label_of(name: str, setting: Setting) -> str:
    text = setting.label or name.replace("_", " ")
    return text[:1].upper() + text[1:]


def field_component(prefix: str, name: str, setting: Setting) -> gr.Component:
    """One input for one setting, with its elem_id `<prefix>-<name with dashes>`."""
    elem_id = f"{prefix}-{name.replace('_', '-')}"
    label = label_of(name, setting)
    info = setting.help or None
    if setting.type == "bool":
        return gr.Checkbox(value=bool(setting.default), label=label, info=info, elem_id=elem_id)
    if setting.choices:
        return gr.Dropdown(choices=list(setting.choices), value=setting.default, label=label, info=info,
                           elem_id=elem_id)
    # A required setting has no default to fall back on: say so instead of "empty: default".
    placeholder = "required" if setting.required else "empty: default"
    if setting.type in ("int", "float") and setting.default is None:
        # "Empty = decided elsewhere" (the preset's shape, lr / 10, ...): a gr.Number cannot be empty (it
        # shows and sends 0), so these are text boxes whose text form_params turns into a number.
        return gr.Textbox(value="", label=label, info=info, placeholder=placeholder, elem_id=elem_id)
    if setting.type in ("int", "float"):
        # No minimum / maximum here: Gradio would refuse a value out of them with a toast naming neither the
        # field nor the setting; `field_errors` checks the bounds and shows them under the field instead.
        return gr.Number(setting.default, label=label, info=info, precision=0 if setting.type == "int" else None,
                         elem_id=elem_id)
    return gr.Textbox(value=setting.default if isinstance(setting.default, str) else "", label=label, info=info,
                      placeholder=placeholder if setting.required else None, elem_id=elem_id)


def _rows(prefix: str, spec: JobKindSpec, names: list[str]) -> dict[str, gr.Component]:
    components = {}
    for start in range(0, len(names), FIELDS_PER_ROW):
        with gr.Row():
            for name in names[start:start + FIELDS_PER_ROW]:
                components[name] = field_component(prefix, name, spec.params[name])
    return components


def build_fields(spec: JobKindSpec, prefix: str, exclude: tuple[str, ...] = ()) -> dict[str, gr.Component]:
    """Inputs for the kind's settings except `exclude` (which the tab builds itself), by param name: those the kind
    lists in `form_fields` (a kind that lists none: every setting not marked advanced), then the advanced ones."""
    first = spec.form_fields or tuple(name for name, setting in spec.params.items() if not setting.advanced)
    main = [name for name in first if name not in exclude]
    advanced = [name for name, setting in spec.params.items()
                if name not in main and name not in exclude and setting.advanced]
    components = _rows(prefix, spec, main)
    if advanced:
        with gr.Accordion("Advanced", open=False, elem_id=f"{prefix}-advanced"):
            components.update(_rows(prefix, spec, advanced))
    return components


def submit_column(prefix: str, title: str, button: str) -> tuple[gr.HTML, gr.Button, gr.HTML, gr.Number]:
    """The right-hand column of a Train form: the estimate, the submit button, its result and the new
    job's id (hidden), with elem_ids `<prefix>-estimate`, `-submit`, `-result`."""
    gr.Markdown(f"#### {title}")
    estimate = gr.HTML(elem_id=f"{prefix}-estimate")
    submit = gr.Button(button, variant="primary", elem_id=f"{prefix}-submit")
    result = gr.HTML(elem_id=f"{prefix}-result")
    job_id = gr.Number(visible=False, precision=0)
    return estimate, submit, result, job_id


def form_params(spec: JobKindSpec, values: dict[str, Any]) -> dict[str, Any]:
    """Job params from a form's values: empty fields are left out (the kind's defaults apply), whole
    numbers of int settings become ints (gr.Number gives floats), text is stripped. Anything else is
    passed on as it is, so the service can say what is wrong with it."""
    params: dict[str, Any] = {}
    for name, value in values.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        setting = spec.params.get(name)
        if isinstance(value, str):
            value = value.strip()
            if setting is not None and setting.type in ("int", "float"):
                value = _number_or_text(value)
        if setting is not None and setting.type == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
        params[name] = value
    return params


def field_errors(spec: JobKindSpec, params: dict[str, Any], missing: dict[str, str] | None = None) -> dict[str, str]:
    """{param: what is wrong with it} for a form's params (`form_params`), every field at once, each said with
    the field's label and the declared rule ("Learning rate: must be greater than 0, got 0.0"): the checks
    submit makes (`Setting.check`, required settings), shown under each field before anything is sent.
    `missing` maps a required chooser to the sentence said when it is empty ("Choose a dataset first")."""
    errors: dict[str, str] = {}
    for name, setting in spec.params.items():
        label = label_of(name, setting)
        if params.get(name) is None:
            if setting.required:
                errors[name] = (missing or {}).get(name) or f"{label}: is required"
            continue
        try:
            setting.check(name, params[name])
        except ValueError as error:
            errors[name] = f"{label}: {error}"
    return errors


def refusal_under_field(settings, spec: JobKindSpec, params: dict[str, Any], shown: tuple[str, ...]) -> dict[str, str]:
    """{param: the refusal} when submit would refuse `params` on a param the form shows (the server's own checks:
    a schedule that does not fit, a run too big for the workers, a model of the wrong kind), so it is said under
    that field like a bound; {} when submit would take them or refuses on something the form has no field for
    (then submit says it under its button)."""
    from web import services
    from web.ui import db_session

    try:
        with db_session(settings) as session:
            services.check_run(str(spec.kind), params, session=session)
    except services.InvalidInput as refusal:
        if refusal.field in shown:
            prefix = f"{refusal.field}: "
            message = refusal.message[len(prefix):] if refusal.message.startswith(prefix) else refusal.message
            return {refusal.field: f"{label_of(refusal.field, spec.params[refusal.field])}: {message}"}
    return {}


def _number_or_text(text: str) -> Any:
    """A typed number as int or float; anything else stays text, for the service to name as wrong."""
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def memory_note_html(estimate: dict | None) -> str:
    """A refusal foretold: the estimate's peak memory above what the workers have (the submit check's rule)."""
    from llm.memory import human_gb
    from web.ui.plots import message_html

    needed, available = (estimate or {}).get("memory_bytes"), (estimate or {}).get("worker_memory_bytes")
    if not isinstance(needed, (int, float)) or not isinstance(available, (int, float)) or needed <= available:
        return ""
    return message_html(f"This run needs about {human_gb(needed)}; the workers have {human_gb(available)} "
                        f"({estimate.get('worker_memory_source')}): lower batch_size, block_size or the model "
                        "size (submit refuses this).", "error")


def schedule_notes(spec: JobKindSpec, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(level, sentence) notes on how warmup / eval_every / checkpoint_every fit max_steps, before submit: the
    defaults that shrink with a short run (info), mismatches (warn) and what submit refuses (error). The
    rules are the kinds' own (llm.train_config), so the form says exactly what the check will do."""
    names = SCHEDULE_NAMES
    if not all(name in spec.params for name in names):
        return []
    defaults = {name: spec.params[name].default for name in names}
    values = {name: params.get(name, defaults[name]) for name in names}
    if not all(isinstance(value, int) and not isinstance(value, bool) and value >= 0 for value in values.values()) \
            or values["max_steps"] < 1:
        return []  # a wrong value: submit names it
    notes = []
    shrunk = fit_schedule_to_steps(values, defaults)
    if shrunk:
        changes = ", ".join(f"{name} {values[name]} → {value}" for name, value in shrunk.items())
        notes.append(("info", f"For a run of {values['max_steps']} steps the defaults shrink: {changes}."))
        values.update(shrunk)
    for problem in schedule_problems(values):
        if problem.refuses:
            notes.append(("error", f"{problem.message} (submit refuses this)."))
        else:
            notes.append(("warn", problem.message + "."))
    return notes


def schedule_notes_html(spec: JobKindSpec, params: dict[str, Any]) -> str:
    from web.ui.plots import message_html

    return "".join(message_html(text, level) for level, text in schedule_notes(spec, params))


def wire_schedule_notes(spec: JobKindSpec, fields: dict[str, gr.Component], params_of: Any, inputs: list,
                        notes: gr.HTML) -> None:
    """Refresh `notes` (under the form) whenever max_steps or a step-counted setting changes."""
    triggers = [fields[name].change for name in SCHEDULE_NAMES if name in fields]
    gr.on(triggers, lambda *args: schedule_notes_html(spec, params_of(args)), inputs, notes,
          trigger_mode="always_last", show_progress="hidden", api_visibility="private")


def submit_from_form(settings, kind: str, params: dict[str, Any], request: gr.Request | None,
                     required: dict[str, str]) -> tuple[str, int | None]:
    """Submit a job from a Train form: (message html, new job id or None).

    `required` maps a chooser's param to the sentence shown when it is empty ("Choose a dataset first")."""
    from web import services
    from web.ui import can_write, current_user, db_session, error_text
    from web.ui.plots import message_html

    user = current_user(settings, request)
    if not can_write(user):
        return message_html(f"Your role ({user['role']}) cannot submit jobs.", "error"), None
    for name, sentence in required.items():
        if name not in params:
            return message_html(sentence, "error"), None
    try:
        with db_session(settings) as session:
            job = services.submit_job(session, kind, params, user["name"] if user else None)
            new_id = job.id
    except (services.ServiceError, ValueError) as error:
        # InvalidInput names the field ("max_steps: must be a positive whole number, got 0").
        return message_html(f"Not submitted — {error_text(error)}", "error"), None
    return message_html(f"Job #{new_id} queued. Follow it in the Jobs tab.", "ok"), new_id


def jump_to_jobs_after(submit_event: Any, job_id: gr.Number, tabs: gr.Tabs, jobs_tab_id: str, on_job: Any) -> None:
    """Once a job is queued: let the Jobs tab select it (`on_job(job_id)`), then switch to that tab."""
    def jump(new_id):
        if not new_id:
            return gr.skip()
        return gr.Tabs(selected=jobs_tab_id)

    # Select the job first, then switch: opening the tab refreshes it with the new selection.
    submit_event.success(*on_job(job_id), api_visibility="private").then(
        jump, [job_id], [tabs], api_visibility="private")
