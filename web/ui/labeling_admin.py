"""Label ▸ Projects & agreement: labeling projects for admins and trainers.

    New project     from finished generate jobs: name, jobs, pairing (all pairs, or n random per prompt),
                    overlap (labels per pair), labelers (everyone who may label, or chosen people), guidelines
    A project       its guidelines (edit and save, previewed as the labelers see them); the live agreement:
                    percent agreement, Krippendorff's alpha with how to read it, consensus counts, Cohen's
                    kappa per labeler pair, each labeler against the others' majority, and the pairs they
                    disagree on, with the prompt and both answers (to adjudicate); exports as file downloads
                    (TRL JSONL of the consensus pairs, CSV of every raw label)

It is a sub-tab of the Label tab rather than a tab of its own: labeling has one home, labelers never see this
part (hidden on load; `web.services` refuses them anyway: `Action.manage_labeling`), and the top tab bar does
not grow. Agreement refreshes every `TICK_SECONDS` while the sub-tab is open, so it fills as labels arrive.
The numbers are `web.services.labeling_results.agreement_report`'s, the same as GET /api/labeling/.../agreement.
"""

from __future__ import annotations

import html
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from web.ui import current_user, db_session, error_text
from web.ui.plots import job_title, message_html, stat_cards_html

TICK_SECONDS = 10.0
EVERYONE, CHOSEN = "everyone who may label", "chosen people"
KAPPA_COLUMNS = ["labeler A", "labeler B", "pairs both labeled", "Cohen's kappa"]
MAJORITY_COLUMNS = ["labeler", "pairs compared", "agrees with the others' majority"]
DISAGREEMENT_COLUMNS = ["pair", "prompt", "answer a", "answer b", "labels"]
# The service's field names → the form's labels, so a refusal says which field to fix.
FORM_FIELDS = {"name": "Name", "source_job_ids": "Finished generate jobs", "pairing": "Pairing",
               "pairs_per_prompt": "Pairs per prompt", "overlap": "Overlap", "labeler_ids": "Chosen labelers", "co_owner_ids": "Co-owners",
               "guidelines": "Guidelines"}
EXPORTS = {"trl": "project-{id}-pairs.jsonl", "csv": "project-{id}-labels.csv"}  # as the API names them


# ----------------------------------------------------------------------------- pure shaping

def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def agreement_html(report: dict) -> str:
    """The headline numbers as cards, the alpha's reading sentence, and what the consensus makes."""
    counts = report["consensus"]
    cards = [("labels", f"{report['labels']:,}"), ("labelers", str(len(report["labelers"]))),
             ("percent agreement", percent(report["percent_agreement"])),
             ("Krippendorff's alpha", number(report["alpha"])),
             ("consensus pairs", f"{counts['pairs']:,}")]
    made = (f"With at least {report['min_labels']} label(s) per pair: {counts['pairs']} chosen/rejected pairs, "
            f"{counts['tie']} ties, {counts['both_bad']} both bad, {counts['no_majority']} without a majority, "
            f"{counts['too_few_labels']} with too few labels so far.")
    return (f'<div id="labeling-agreement-numbers" data-alpha="{"" if report["alpha"] is None else report["alpha"]}" '
            f'data-labels="{report["labels"]}">' + stat_cards_html(cards)
            + f'<p class="wb-alpha-reading" style="margin:8px 0 2px 0">{html.escape(report["alpha_reading"])}</p>'
            + f'<p style="margin:0;font-size:13px;opacity:.8">{html.escape(made)}</p></div>')


def kappa_frame(report: dict) -> pd.DataFrame:
    rows = [[k["labeler_a"], k["labeler_b"], k["shared"], number(k["kappa"])] for k in report["kappas"]]
    return pd.DataFrame(rows, columns=KAPPA_COLUMNS)


def majority_frame(report: dict) -> pd.DataFrame:
    rows = [[m["labeler"], m["compared"], percent(m["agreement"])] for m in report["against_majority"]]
    return pd.DataFrame(rows, columns=MAJORITY_COLUMNS)


def disagreement_frame(report: dict) -> pd.DataFrame:
    """What the labelers disagree on: the prompt, both answers and each one's label. Labels as stored: "a"/"b"
    name the pair's first/second answer (the columns), whatever side each labeler saw them on."""
    rows = [[d["pair_id"], d["prompt"], d["answer_a"], d["answer_b"],
             ", ".join(f"{who}: {label}" for who, label in sorted(d["labels"].items()))]
            for d in report["disagreements"]]
    return pd.DataFrame(rows, columns=DISAGREEMENT_COLUMNS)


def job_choices(jobs: list[dict]) -> list[tuple[str, int]]:
    return [(f"#{j['id']} {job_title(j)}" + (f" · {j['owner']}" if j.get("owner") else ""), j["id"]) for j in jobs]


def person_choices(users: list[dict]) -> list[tuple[str, int]]:
    return [(f"{u['name']} ({u['role']})", u["id"]) for u in users]


def project_choices(projects: list[dict]) -> list[tuple[str, int]]:
    return [(f"{p['name']} · {p['pairs']} pairs, overlap {p['overlap']}", p["id"]) for p in projects]


def whole_number(value: Any, field: str) -> int:
    """A gr.Number's value as an int, or InvalidInput naming the field."""
    from web.services import InvalidInput

    if value is None or value == "" or float(value) != int(float(value)):
        raise InvalidInput(f"{field} must be a whole number", field=field)
    return int(float(value))


# ----------------------------------------------------------------------------- the panel

@dataclass
class LabelingAdmin:
    settings: Any
    picker: gr.Dropdown
    jobs: gr.Dropdown
    labelers: gr.Dropdown
    co_owners: gr.Dropdown          # the new project's
    owners: gr.Dropdown             # the chosen project's
    timer: gr.Timer
    agreement_outputs: list  # numbers, kappas, majority, disagreements

    def _who(self, request) -> str | None:
        user = current_user(self.settings, request)
        return user["name"] if user else None

    def refresh(self, chosen: int | None = None, request: gr.Request | None = None):
        """(project picker, finished generate jobs, labelers, co-owners of a new project, of the chosen one) for a
        manager; empty for anyone else."""
        from web.services import ServiceError, labeling, list_jobs

        who = self._who(request)
        try:
            with db_session(self.settings) as session:
                projects = labeling.list_projects(who, session=session)
                jobs = list_jobs(status="succeeded", kind="generate", session=session,
                                 viewer=current_user(self.settings, request))
                users = labeling.labeler_choices(who, session=session)
                managers = labeling.co_owner_choices(who, session=session)
        except ServiceError:
            projects, jobs, users, managers = [], [], [], []
        choices = project_choices(projects)
        ids = [value for _, value in choices]
        return (gr.Dropdown(choices=choices, value=chosen if chosen in ids else (ids[0] if ids else None)),
                gr.Dropdown(choices=job_choices(jobs)), gr.Dropdown(choices=person_choices(users)),
                gr.Dropdown(choices=person_choices(managers)), gr.Dropdown(choices=person_choices(managers)))

    def create(self, name, job_ids, pairing, pairs_per_prompt, overlap, who_labels, labeler_ids, co_owner_ids,
               guidelines, request: gr.Request | None = None):
        """(message, picker, jobs, labelers, co-owners, owners): the new project chosen, or the refusal naming the
        field."""
        from web.services import ServiceError, labeling

        try:
            if who_labels == CHOSEN and not labeler_ids:
                from web.services import InvalidInput

                raise InvalidInput("choose the labelers, or let everyone who may label do it", field="labeler_ids")
            with db_session(self.settings) as session:
                project = labeling.create_project(
                    session, self._who(request), name=name or "", source_job_ids=[int(j) for j in job_ids or []],
                    pairing=pairing, pairs_per_prompt=whole_number(pairs_per_prompt, "pairs_per_prompt")
                    if pairing == "random" else None, overlap=whole_number(overlap, "overlap"),
                    guidelines=guidelines or "",
                    labeler_ids=[int(i) for i in labeler_ids] if who_labels == CHOSEN else None,
                    co_owner_ids=[int(i) for i in co_owner_ids or []])
                made = labeling.project_to_dict(session, project)
        except ServiceError as error:
            where = FORM_FIELDS.get(getattr(error, "field", None) or "")
            text = f"Not created — {where}: {error_text(error)}" if where else f"Not created — {error_text(error)}"
            return message_html(text, "error"), *[gr.skip()] * 5
        message = message_html(f"Created {made['name']}: {made['pairs']} pairs, {made['overlap']} label(s) each. "
                               "Labelers find it in the Label sub-tab.", "ok")
        return (message, *self.refresh(made["id"], request))

    def show(self, project_id: int | None, request: gr.Request | None = None):
        """(guidelines editor, preview, co-owners, numbers, kappas, majority, disagreements) of the chosen
        project."""
        from web.services import ServiceError, labeling

        if not project_id:
            return ("", "", [], *self.empty_agreement(""))
        try:
            project = labeling.get_project(int(project_id), self._who(request))
        except ServiceError as error:
            return ("", "", [], *self.empty_agreement(message_html(error_text(error), "error")))
        return (project["guidelines"], project["guidelines"], project["co_owner_ids"],
                *self.agreement(project_id, request))

    @staticmethod
    def empty_agreement(numbers: str) -> tuple:
        return (numbers, pd.DataFrame(columns=KAPPA_COLUMNS), pd.DataFrame(columns=MAJORITY_COLUMNS),
                pd.DataFrame(columns=DISAGREEMENT_COLUMNS))

    def agreement(self, project_id: int | None, request: gr.Request | None = None) -> tuple:
        from web.services import ServiceError, labeling_results

        if not project_id:
            return self.empty_agreement("")
        try:
            report = labeling_results.agreement_report(int(project_id), self._who(request))
        except ServiceError as error:
            return self.empty_agreement(message_html(error_text(error), "error"))
        return agreement_html(report), kappa_frame(report), majority_frame(report), disagreement_frame(report)

    def save_guidelines(self, project_id: int | None, guidelines: str, request: gr.Request | None = None):
        """(message, preview)."""
        from web.services import ServiceError, labeling

        if not project_id:
            return message_html("Choose a project first.", "error"), gr.skip()
        try:
            with db_session(self.settings) as session:
                project = labeling.update_guidelines(session, self._who(request), int(project_id), guidelines or "")
        except ServiceError as error:
            return message_html(f"Not saved — {error_text(error)}", "error"), gr.skip()
        return message_html(f"Guidelines of {project['name']} saved; labelers see them on their next pair.",
                            "ok"), project["guidelines"]

    def save_co_owners(self, project_id: int | None, co_owner_ids: list | None, request: gr.Request | None = None):
        """(message, co-owners): who owns the project with its creator, saved (the owners' or an admin's call)."""
        from web.services import ServiceError, labeling

        if not project_id:
            return message_html("Choose a project first.", "error"), gr.skip()
        try:
            with db_session(self.settings) as session:
                project = labeling.set_co_owners(session, self._who(request), int(project_id),
                                                 [int(i) for i in co_owner_ids or []])
        except ServiceError as error:
            return message_html(f"Not saved — co-owners: {error_text(error)}", "error"), gr.skip()
        count = len(project["co_owner_ids"])
        said = f"{count} co-owner{'s' if count != 1 else ''}" if count else "no co-owners"
        return (message_html(f"{project['name']} now has {said}: they may change it, see its agreement and export "
                             "it.", "ok"), project["co_owner_ids"])

    def export(self, project_id: int | None, fmt: str, request: gr.Request | None = None):
        """(file, message): the export written to a fresh temporary folder (Gradio serves files from there)."""
        from web.services import ServiceError, labeling_results

        if not project_id:
            return gr.File(visible=False), message_html("Choose a project first.", "error")
        try:
            who = self._who(request)
            body = (labeling_results.export_trl_jsonl(int(project_id), who) if fmt == "trl"
                    else labeling_results.export_labels_csv(int(project_id), who))
        except ServiceError as error:
            return gr.File(visible=False), message_html(error_text(error), "error")
        path = Path(tempfile.mkdtemp(prefix="workbench-labels-")) / EXPORTS[fmt].format(id=int(project_id))
        path.write_text(body, encoding="utf-8")
        lines = body.count("\n") - (fmt == "csv")  # the CSV's header is not a label
        what = "consensus pairs" if fmt == "trl" else "labels"
        return gr.File(value=str(path), visible=True), message_html(f"{lines} {what} in {path.name}.", "ok")

    def wire(self, blocks: gr.Blocks, page: gr.Tab, other_page: gr.Tab) -> None:
        """Opening the sub-tab refreshes the lists and starts the agreement timer; the Label sub-tab stops it."""
        private = {"api_visibility": "private"}
        page.select(self.refresh, [self.picker], [self.picker, self.jobs, self.labelers, self.co_owners, self.owners],
                    queue=False,
                    **private).then(lambda: gr.Timer(active=True), None, [self.timer], **private)
        other_page.select(lambda: gr.Timer(active=False), None, [self.timer], queue=False, **private)
        self.timer.tick(self.agreement, [self.picker], self.agreement_outputs, show_progress="hidden", **private)


def build(settings) -> LabelingAdmin:
    gr.Markdown("Projects pair the answers of finished **generate** jobs; labelers compare them in the Label sub-tab. "
                "*Overlap* is how many people label each pair: 2 or more lets you measure agreement, and the "
                "consensus (the label more than half give) becomes the preference pairs that Reward and DPO "
                "training and the TRL export use.")
    message = gr.HTML(elem_id="labeling-message")
    with gr.Accordion("New project", open=False, elem_id="labeling-new"):
        with gr.Row():
            name = gr.Textbox(label="Name", elem_id="labeling-name", scale=2)
            jobs = gr.Dropdown(label="Finished generate jobs", choices=[], multiselect=True, elem_id="labeling-jobs",
                               scale=3)
        with gr.Row():
            pairing = gr.Radio([("every two answers of a prompt", "all"), ("n random pairs per prompt", "random")],
                               value="all", label="Pairing", elem_id="labeling-pairing")
            # No minimum/maximum on these: Gradio answers an out-of-range number with a toast naming no field; the
            # service's check names it ("Not created — Overlap: overlap must be a whole number from 1 to 20").
            per_prompt = gr.Number(value=3, precision=0, label="Pairs per prompt (random)",
                                   elem_id="labeling-per-prompt")
            overlap = gr.Number(value=2, precision=0, label="Overlap (labels per pair)", elem_id="labeling-overlap")
        with gr.Row():
            who_labels = gr.Radio([EVERYONE, CHOSEN], value=EVERYONE, label="Labelers", elem_id="labeling-who")
            labelers = gr.Dropdown(label="Chosen labelers", choices=[], multiselect=True, elem_id="labeling-labelers")
            co_owners = gr.Dropdown(label="Co-owners (trainers or admins who may manage it too)", choices=[],
                                    multiselect=True, elem_id="labeling-co-owners")
        new_guidelines = gr.Textbox(label="Guidelines (Markdown)", lines=4, elem_id="labeling-new-guidelines")
        create = gr.Button("Create project", variant="primary", elem_id="labeling-create")

    picker = gr.Dropdown(label="Project", choices=[], elem_id="labeling-project")
    with gr.Accordion("Guidelines", open=False, elem_id="labeling-guidelines-panel"):
        with gr.Row(equal_height=True):
            guidelines = gr.Textbox(label="Markdown", lines=8, elem_id="labeling-guidelines")
            preview = gr.Markdown(elem_id="labeling-guidelines-preview", container=True)
        save = gr.Button("Save guidelines", elem_id="labeling-save-guidelines")
    with gr.Accordion("Owners", open=False, elem_id="labeling-owners-panel"):
        with gr.Row(equal_height=True):
            owners = gr.Dropdown(label="Co-owners: they may change the project, see its agreement and export it",
                                 choices=[], multiselect=True, elem_id="labeling-owners", scale=4)
            save_owners = gr.Button("Save co-owners", elem_id="labeling-save-owners", scale=1)
    gr.Markdown("#### Agreement")
    numbers = gr.HTML(elem_id="labeling-agreement")
    with gr.Row(equal_height=False):
        kappas = gr.Dataframe(pd.DataFrame(columns=KAPPA_COLUMNS), label="Cohen's kappa per labeler pair",
                              interactive=False, elem_id="labeling-kappas")
        majority = gr.Dataframe(pd.DataFrame(columns=MAJORITY_COLUMNS), label="Each labeler vs the majority",
                                interactive=False, elem_id="labeling-majority")
    disagreements = gr.Dataframe(pd.DataFrame(columns=DISAGREEMENT_COLUMNS), interactive=False, wrap=True,
                                 label="Disagreements: the prompt, both answers and each labeler's label "
                                       "(a and b are the answers in these columns)",
                                 column_widths=["6%", "20%", "30%", "30%", "14%"],
                                 elem_id="labeling-disagreements", max_height=520)
    with gr.Row():
        refresh = gr.Button("Refresh agreement", size="sm", elem_id="labeling-refresh")
        export_trl = gr.Button("Export TRL JSONL (consensus pairs)", size="sm", elem_id="labeling-export-trl")
        export_csv = gr.Button("Export CSV (every label)", size="sm", elem_id="labeling-export-csv")
    download = gr.File(label="Download", visible=False, elem_id="labeling-file")
    timer = gr.Timer(TICK_SECONDS, active=False)

    agreement_outputs = [numbers, kappas, majority, disagreements]
    panel = LabelingAdmin(settings=settings, picker=picker, jobs=jobs, labelers=labelers, co_owners=co_owners,
                          owners=owners, timer=timer, agreement_outputs=agreement_outputs)
    private = {"api_visibility": "private"}
    create.click(panel.create, [name, jobs, pairing, per_prompt, overlap, who_labels, labelers, co_owners,
                                new_guidelines], [message, picker, jobs, labelers, co_owners, owners], **private)
    picker.change(panel.show, [picker], [guidelines, preview, owners, *agreement_outputs], **private)
    save_owners.click(panel.save_co_owners, [picker, owners], [message, owners], **private)
    refresh.click(panel.agreement, [picker], agreement_outputs, **private)
    guidelines.change(lambda text: text, [guidelines], [preview], queue=False, show_progress="hidden", **private)
    save.click(panel.save_guidelines, [picker, guidelines], [message, preview], **private)

    def export_pairs(project_id, request: gr.Request):
        return panel.export(project_id, "trl", request)

    def export_labels(project_id, request: gr.Request):
        return panel.export(project_id, "csv", request)

    export_trl.click(export_pairs, [picker], [download, message], **private)
    export_csv.click(export_labels, [picker], [download, message], **private)
    return panel
