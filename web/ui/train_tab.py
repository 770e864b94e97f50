"""Train ▸ one sub-tab per job kind, built from its declaration (`worker.kinds.KINDS`) by `build(settings, spec)`.

Every sub-tab has, for any kind:
  - choosers for the params picked among what exists: `dataset_id` (datasets of the kind's `dataset_kinds`),
    `model_id` and `model_id_<x>` (models of its `model_kinds`; `model_ids`: several of them), `tokenizer` (the
    tokenizers there are). Their
    choices are re-read when the page loads and whenever Train or the sub-tab is opened; that refresh never
    undoes a pick (it may answer after one), and never chooses a dataset for the person. An optional chooser
    offers "(none)";
  - an input per other setting (`job_form.build_fields`: type, default, bounds and help from the declaration),
    and under them how warmup / eval_every / checkpoint_every fit max_steps, for kinds with that schedule;
  - on the right, the kind's estimate (`services.estimate_run`: the kind's own `estimate.py`, whose memory is
    the figure its submit check compares), the submit button and its result. A submit goes through
    `services.submit_job`; on success the Jobs tab opens with the new job selected. Before it is sent, every
    field is checked as submit checks it (`job_form.field_errors`, as Gradio's validator): a wrong value is said
    under its field, with the field's label and the bound, the other fields' errors and the last result cleared.
Element ids: `<prefix>-<param>` for inputs (`pt-max-steps`), choosers without their "_id"
(`pt-dataset`, `ft-model`, `gen-model-b`, `rm-projects`), and `<prefix>-estimate`, `-submit`, `-result`, with the
prefix and tab names the kind declares (`JobKindSpec.form_names`).

What a kind's form has that is truly its own is in its folder's optional `form.py` (only the UI imports it):
  choosers(spec) -> [Chooser]  more params picked among choices (pretrain: the presets; reward and DPO: the
                               labeling projects whose consensus pairs they learn from)
  PANEL: Panel                 the right-hand panel instead of an estimate (reward and DPO: the pairs each
                               source gives now)
  NOTES: Notes                 html under the fields, re-read with the choices (the tokenizer kind: the
                               tokenizers that exist, so a name already taken is seen before submit)
A kind without form.py gets a working sub-tab all the same.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from llm.params import Setting
from web.ui import db_session, error_text, job_form
from web.ui.plots import human_bytes, human_count, human_duration, message_html, stat_cards_html
from worker.kinds import JobKindSpec

NONE = 0  # the "(none)" choice of an optional chooser (a dropdown cannot show None as a choice)
CHOOSERS_PER_ROW = 3
# What a dataset's stats count, by its kind's unit: shown beside its name.
DATASET_UNITS = ("documents", "conversations", "prompts", "pairs")


@dataclass(frozen=True)
class Chooser:
    """A param picked among choices: rows of the database, re-read when the tab opens, or values from code."""

    name: str                                            # the param it fills
    label: str
    options: Callable[[Any], list[tuple[str, Any]]]      # settings -> [(label, value)], newest first
    required: bool = True
    multiple: bool = False        # several values (checkboxes); the param is their ids, comma-separated
    static: bool = False          # the choices come from code: read once, when the form is built
    preselect: bool = False       # the first (newest) one is chosen while nothing is
    default: Any = None
    info: str | None = None

    @property
    def elem_suffix(self) -> str:
        """"dataset_id" -> "dataset", "model_id_b" -> "model-b", "project_ids" -> "projects"."""
        return self.name.replace("_ids", "s").replace("_id", "").replace("_", "-")

    def choices(self, settings) -> list[tuple[str, Any]]:
        options = self.options(settings)
        return options if self.required or self.multiple else [("(none)", NONE)] + options

    def component(self, prefix: str, settings) -> gr.Component:
        choices = self.choices(settings) if self.static else ([] if self.required or self.multiple
                                                              else [("(none)", NONE)])
        elem_id = f"{prefix}-{self.elem_suffix}"
        if self.multiple:
            return gr.CheckboxGroup(label=self.label, choices=choices, info=self.info, elem_id=elem_id)
        value = self.default if self.default is not None else (None if self.required else NONE)
        if self.default is not None and not self.static:
            choices = [(str(self.default), self.default)]
        return gr.Dropdown(label=self.label, choices=choices, value=value, info=self.info, elem_id=elem_id)

    def offer(self, current: Any, choices: list[tuple[str, Any]]) -> gr.Component:
        """The refreshed choices. The value is left alone (not even sent) unless what it names has gone: this
        answer can land after a pick the person made meanwhile (`current` is from before), and must not undo it."""
        values = [value for _, value in choices]
        if self.multiple:
            kept = [value for value in current or [] if value in values]
            return (gr.CheckboxGroup(choices=choices) if len(kept) == len(current or [])
                    else gr.CheckboxGroup(choices=choices, value=kept))
        empty = None if self.required else NONE
        if current is None or current == empty:
            first = next((value for value in values if value != NONE), None)
            return gr.Dropdown(choices=choices, value=first) if self.preselect and first is not None \
                else gr.Dropdown(choices=choices)
        if current in values:
            return gr.Dropdown(choices=choices)
        return gr.Dropdown(choices=choices, value=self.default if self.default in values else empty)

    def param(self, value: Any) -> Any:
        """The job param for the component's value: "(none)" is no value, several ids are comma-separated."""
        if self.multiple:
            return ",".join(str(item) for item in value or []) or None
        return None if value == NONE and not self.required else value


@dataclass(frozen=True)
class Panel:
    """The right-hand panel of a kind that shows something else than an estimate (from its form.py)."""

    title: str
    render: Callable[[Any, dict[str, Any]], str]   # (settings, the form's params) -> html
    inputs: tuple[str, ...]                        # the params whose change refreshes it


@dataclass(frozen=True)
class Notes:
    """Html under a kind's fields, re-read with the choices (from its form.py)."""

    elem_suffix: str
    render: Callable[[Any], str]                   # settings -> html


# ----------------------------------------------------------------------------- the choosers every kind gets

def dataset_choices(datasets: list[dict]) -> list[tuple[str, int]]:
    choices = []
    for dataset in datasets:
        stats = dataset.get("stats") or {}
        unit = next((unit for unit in DATASET_UNITS if isinstance(stats.get(unit), int)), None)
        counted = f" ({stats[unit]:,} {unit})" if unit else ""
        choices.append((f"#{dataset['id']} · {dataset['name']}{counted}", int(dataset["id"])))
    return choices


def model_choices(models: list[dict]) -> list[tuple[str, int]]:
    return [(f"#{model['id']} · {model['name']} ({model['kind']})", int(model["id"])) for model in models]


def tokenizer_choices(tokenizers: list[dict]) -> list[tuple[str, str]]:
    return [(f"{t['name']} ({t.get('kind', 'builtin')}, vocab {t.get('vocab_size', '?'):,})"
             if isinstance(t.get("vocab_size"), int) else t["name"], t["name"]) for t in tokenizers]


def _kinds(kinds: tuple) -> list[str]:
    return [str(getattr(kind, "value", kind)) for kind in kinds]


def _info(setting: Setting) -> str:
    what = setting.help.removeprefix("ids of ").removeprefix("id of ")
    return f"{'required' if setting.required else 'optional'}: {what}" if what else \
        ("required" if setting.required else "optional")


def standard_choosers(spec: JobKindSpec) -> list[Chooser]:
    """The choosers derived from the declaration: its dataset, its models and its tokenizer."""
    from web import services

    choosers = []
    dataset = spec.params.get("dataset_id")
    if dataset is not None and spec.dataset_kinds:
        kinds = _kinds(spec.dataset_kinds)
        label = job_form.label_of("dataset_id", dataset)
        if not any(kind in label.lower() for kind in kinds):
            label += f" ({' or '.join(kinds)})"

        def datasets(settings, kinds=kinds):
            with db_session(settings) as session:
                rows = [row for kind in kinds for row in services.list_datasets(kind=kind, session=session)]
            return dataset_choices(sorted(rows, key=lambda row: -row["id"]))

        choosers.append(Chooser("dataset_id", label, datasets, required=dataset.required, info=_info(dataset)))
    model_names = [name for name, setting in spec.params.items()
                   if (setting.type == "int" and (name == "model_id" or name.startswith("model_id_")))
                   or (setting.type == "ids" and name == "model_ids")]
    for name in model_names:
        setting = spec.params[name]
        kinds = _kinds(spec.model_kinds)
        several = setting.type == "ids"

        def models(settings, kinds=kinds):
            with db_session(settings) as session:
                return model_choices([model for model in services.list_models(session=session)
                                      if model["kind"] in kinds])

        # A kind with an estimate sizes the run on its model: the newest one is offered rather than nothing.
        choosers.append(Chooser(name, f"{job_form.label_of(name, setting)} ({', '.join(kinds)})", models,
                                required=setting.required, multiple=several,
                                preselect=spec.estimate is not None and setting.required and not several,
                                info=_info(setting)))
    tokenizer = spec.params.get("tokenizer")
    if tokenizer is not None:
        def tokenizers(settings):
            from llm.tokenizer import list_tokenizers

            return tokenizer_choices(list_tokenizers(settings.data_dir))

        choosers.append(Chooser("tokenizer", "Tokenizer", tokenizers, default=tokenizer.default,
                                info=tokenizer.help))
    return choosers


def kind_form_module(spec: JobKindSpec) -> Any | None:
    """The kind's own form parts (`worker/kinds/<kind>/form.py`), or None when it has none."""
    name = f"worker.kinds.{spec.kind}.form"
    return importlib.import_module(name) if importlib.util.find_spec(name) is not None else None


def _in_form_order(spec: JobKindSpec, choosers: list[Chooser]) -> list[Chooser]:
    order = list(spec.form_fields) + [name for name in spec.params if name not in spec.form_fields]
    return sorted(choosers, key=lambda chooser: order.index(chooser.name) if chooser.name in order else len(order))


# ----------------------------------------------------------------------------- the estimate panel

def estimate_html(estimate: dict | None, error: str | None = None, cards_id: str | None = None) -> str:
    """A kind's estimate (`services.estimate_run`) as cards: the figures it has, the time and peak memory, what
    they assume, and a warning when the workers have less memory than the run needs (submit refuses it)."""
    if error:
        return message_html(f"Estimate unavailable: {error}", "warn")
    if not estimate:
        return ""
    cards = []
    if isinstance(estimate.get("trainable_params"), int):
        share = estimate["trainable_params"] / max(estimate.get("params_total") or 1, 1)
        cards.append(("trainable parameters", f"{human_count(estimate['trainable_params'])} ({share:.2%})"))
    elif estimate.get("params_count") is not None:
        cards.append(("parameters", human_count(estimate["params_count"])))
    if estimate.get("tokens_per_step") is not None:
        cards.append(("tokens / step", f"{estimate['tokens_per_step']:,}"))
    if estimate.get("total_tokens") is not None:
        cards.append(("total tokens", human_count(estimate["total_tokens"])))
    if estimate.get("est_seconds") is not None:
        cards.append(("estimated time", "~" + human_duration(estimate["est_seconds"])
                      + (f" ({estimate['time_source']})" if estimate.get("time_source") else "")))
    if estimate.get("memory_bytes") is not None:
        cards.append(("peak memory", "~" + human_bytes(estimate["memory_bytes"])))
    if isinstance(estimate.get("head_share"), float):
        cards.append(("vocabulary head", f"{estimate['head_share']:.0%} of the work"))
    note = ""
    if estimate.get("device"):
        in_model = (f"{human_count(estimate['params_total'])} parameters in the model; "
                    if "trainable_params" in estimate and estimate.get("params_total") else "")
        how = f", {html.escape(estimate['time_basis'])}" if estimate.get("time_basis") else ""
        note = (f'<div style="font-size:12px;opacity:.65;margin-top:4px">{in_model}on {estimate["device"]}{how}'
                "; starting the job and tokenizing the data on first use not counted</div>")
    advice = (message_html(estimate["tokenizer_advice"], "info") if estimate.get("tokenizer_advice") else "")
    method = (method_note_html(estimate["method_reason"], estimate["lr"], estimate.get("lr_given", False))
              if estimate.get("method_reason") and isinstance(estimate.get("lr"), (int, float)) else "")
    opening = f'<div id="{cards_id}">' if cards_id else "<div>"
    return (opening + stat_cards_html(cards) + note + advice + method + "</div>"
            + job_form.memory_note_html(estimate))


def method_note_html(reason: str, lr: float, given: bool) -> str:
    """What a fine-tuning run trains and why (its method, "auto" resolved on the chosen model as submit resolves
    it: `worker.jobs.params.resolve_fine_tuning`), and the learning rate it gets."""
    rate = "as given" if given else "chosen from the model's width; see docs/defaults.md"
    return message_html(f"Method: {reason}.\nLearning rate {lr:g} ({rate}).", "info")


# ----------------------------------------------------------------------------- the sub-tab

@dataclass
class TrainTab:
    settings: Any
    spec: JobKindSpec
    inputs: dict[str, gr.Component]          # param -> its input (choosers first)
    refreshed: list[Chooser]                 # the choosers whose choices are re-read
    notes: tuple[Notes, gr.HTML] | None
    submit_event: Any
    job_id: gr.Number
    on_load: list[tuple] = field(default_factory=list)  # (handler, inputs, output) run once the page loads

    @property
    def refresh_outputs(self) -> list[gr.Component]:
        return [self.inputs[chooser.name] for chooser in self.refreshed] + ([self.notes[1]] if self.notes else [])

    def wire(self, blocks: gr.Blocks, *pages: gr.Tab) -> None:
        """Choices are re-read on load and whenever one of `pages` (Train, this sub-tab) is opened, so a dataset
        uploaded, a model or a tokenizer trained meanwhile is offered."""
        currents = [self.inputs[chooser.name] for chooser in self.refreshed]
        outputs = self.refresh_outputs
        if outputs:
            blocks.load(self.refresh_choices, currents, outputs, api_visibility="private")
            for page in pages:
                page.select(self.refresh_choices, currents, outputs, api_visibility="private")
        for handler, inputs, output in self.on_load:
            blocks.load(handler, inputs, output, show_progress="hidden", api_visibility="private")

    def refresh_choices(self, *currents):
        """One update per refreshed chooser (given its current value), then the notes' html."""
        updates = [chooser.offer(current, chooser.choices(self.settings))
                   for chooser, current in zip(self.refreshed, currents)]
        if self.notes:
            updates.append(self.notes[0].render(self.settings))
        return updates[0] if len(updates) == 1 else tuple(updates)  # one output takes its value, not a tuple

    def after_submit(self, tabs: gr.Tabs, jobs_tab_id: str, on_job: Any) -> None:
        job_form.jump_to_jobs_after(self.submit_event, self.job_id, tabs, jobs_tab_id, on_job)


def build(settings, spec: JobKindSpec) -> TrainTab:
    """The Train sub-tab of `spec`'s kind (call inside its gr.Tab); wire it with `.wire` and `.after_submit`."""
    names = spec.form_names
    prefix = names.prefix
    own = kind_form_module(spec)
    choosers = _in_form_order(spec, standard_choosers(spec) + list(getattr(own, "choosers", lambda _: [])(spec)))
    panel: Panel | None = getattr(own, "PANEL", None)
    notes: Notes | None = getattr(own, "NOTES", None)
    has_schedule = all(name in spec.params for name in job_form.SCHEDULE_NAMES)

    gr.Markdown(" ".join(part for part in (spec.description, names.intro) if part))
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            components: dict[str, gr.Component] = {}
            for start in range(0, len(choosers), CHOOSERS_PER_ROW):
                with gr.Row():
                    for chooser in choosers[start:start + CHOOSERS_PER_ROW]:
                        components[chooser.name] = chooser.component(prefix, settings)
            fields = job_form.build_fields(spec, prefix, exclude=tuple(components))
            components.update(fields)
            schedule = gr.HTML(elem_id=f"{prefix}-schedule") if has_schedule else None
            notes_html = gr.HTML(elem_id=f"{prefix}-{notes.elem_suffix}") if notes else None
        with gr.Column(scale=2, min_width=300):
            title = panel.title if panel else ("Size, time and memory" if spec.estimate else names.tab)
            shown, submit, result, job_id = job_form.submit_column(prefix, title, f"Submit {spec.title} job")

    by_name = {chooser.name: chooser for chooser in choosers}

    def params_of(args, param_names=tuple(components)) -> dict[str, Any]:
        """Job params from the values of the inputs named `param_names`, in that order."""
        values = dict(zip(param_names, args))
        return job_form.form_params(spec, {name: by_name[name].param(value) if name in by_name else value
                                           for name, value in values.items()})

    inputs = list(components.values())
    on_load = []
    if has_schedule:
        job_form.wire_schedule_notes(spec, fields, params_of, inputs, schedule)
    if panel is not None:
        panel_names = tuple(name for name in panel.inputs if name in components)
        panel_inputs = [components[name] for name in panel_names]
        gr.on([component.change for component in panel_inputs],
              lambda *args: panel.render(settings, params_of(args, panel_names)), panel_inputs, shown,
              trigger_mode="always_last", show_progress="hidden", api_visibility="private")
    elif spec.estimate is not None:
        do_estimate = _estimator(settings, spec, {chooser.name: chooser.label for chooser in choosers}, params_of)
        gr.on([component.change for component in inputs], do_estimate, inputs, shown, trigger_mode="always_last",
              show_progress="hidden", api_visibility="private")
        on_load.append((do_estimate, inputs, shown))

    missing_sentences = {chooser.name: _choose_first(spec, chooser) for chooser in choosers if chooser.required}

    # Inputs as a set: the handler gets {component: value} (Gradio injects `request` only after
    # positional parameters, so no *args here).
    def do_submit(values: dict, request: gr.Request):
        params = params_of([values[component] for component in inputs])
        return job_form.submit_from_form(settings, str(spec.kind), params, request, missing_sentences)

    def check_fields(values: dict) -> dict:
        """Gradio's validator (run before `do_submit`, which runs only if every field passes): each input gets
        its own error, shown under it, or none (which clears the one a previous submit left)."""
        params = params_of([values[component] for component in inputs])
        errors = job_form.field_errors(spec, params, missing_sentences) or job_form.refusal_under_field(
            settings, spec, params, tuple(components))
        return {component: gr.validate(name not in errors, errors.get(name, ""))
                for name, component in components.items()}

    # The previous submit's "Job #n queued" / "Not submitted" goes at once (in the browser), whatever this one says.
    submit.click(None, None, [result], js="() => ''", api_visibility="private")
    submit_event = submit.click(do_submit, set(inputs), [result, job_id], validator=check_fields,
                                concurrency_limit=2, api_visibility="private")
    return TrainTab(settings=settings, spec=spec, inputs=components,
                    refreshed=[chooser for chooser in choosers if not chooser.static],
                    notes=(notes, notes_html) if notes else None, submit_event=submit_event, job_id=job_id,
                    on_load=on_load)


def _estimator(settings, spec: JobKindSpec, labels: dict[str, str], params_of: Callable) -> Callable:
    """The handler that shows the kind's estimate for the form's values (`services.estimate_run`); while a
    chooser the estimate needs is empty, it says to choose one."""
    from web import services

    def do_estimate(*args):
        try:
            with db_session(settings) as session:
                estimate = services.estimate_run(str(spec.kind), params_of(args), session=session)
            return estimate_html(estimate, cards_id=f"{spec.form_names.prefix}-estimate-cards")
        except (services.ServiceError, ValueError) as error:
            message = error_text(error)
            missing = getattr(error, "field", None)
            if missing in labels and message == f"{missing}: is required":
                what = labels[missing].split(" (")[0].lower()
                return message_html(f"Choose the {what} to see the size of the run.", "info")
            if missing in spec.params and message.startswith(f"{missing}: "):  # said as its field says it
                message = f"{job_form.label_of(missing, spec.params[missing])}: {message[len(missing) + 2:]}"
            return estimate_html(None, message)

    return do_estimate


def _choose_first(spec: JobKindSpec, chooser: Chooser) -> str:
    """What submit says when a required chooser is empty ("Choose a prompts dataset first ...")."""
    setting = spec.params[chooser.name]
    what = setting.label or chooser.name.replace("_", " ")
    if chooser.name == "dataset_id":
        return (f"Choose a {what} first (upload one in Datasets with the kind "
                f"{' or '.join(repr(kind) for kind in _kinds(spec.dataset_kinds))}).")
    return f"Choose one or more {what} first." if chooser.multiple else f"Choose a {what} first."
