"""Train ▸ Reward model and Train ▸ DPO: the forms for the two kinds that learn from preference pairs.

Both take a model to start from and pairs from any mix of three sources: an uploaded preference dataset,
labeling projects (their consensus pairs) and arena votes. The form says how many pairs each source gives
right now; the job snapshots them when it starts (worker/preference_pairs.py). Every other field comes from
the kind's declaration (worker/kinds/reward.py, worker/kinds/dpo.py) through `web/ui/job_form.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from db.models import JobKind
from web.ui import db_session, error_text, job_form
from web.ui.plots import field, message_html
from worker.kinds import KINDS

CHOOSERS = ("model_id", "dataset_id", "project_ids")
NO_DATASET = 0  # the dataset dropdown's "none" choice


def pair_counts_html(dataset_pairs: int | None, project_pairs: dict[str, int], arena_pairs: int | None) -> str:
    parts = []
    if dataset_pairs is not None:
        parts.append(f"{dataset_pairs:,} from the dataset")
    parts += [f"{count:,} from {name}" for name, count in project_pairs.items()]
    if arena_pairs is not None:
        parts.append(f"{arena_pairs:,} from arena votes")
    if not parts:
        return message_html("Choose where the pairs come from: a preference dataset, labeling projects or the "
                            "arena.", "info")
    total = (dataset_pairs or 0) + sum(project_pairs.values()) + (arena_pairs or 0)
    kind = "ok" if total else "warn"
    return message_html(f"{total:,} pairs: " + ", ".join(parts) + (
        "" if total else ". Labeling projects give pairs once their pairs have a consensus."), kind)


@dataclass
class PreferenceTab:
    settings: Any
    kind: JobKind
    model: gr.Dropdown
    dataset: gr.Dropdown
    projects: gr.CheckboxGroup
    submit_event: Any
    job_id: gr.Number

    def wire(self, blocks: gr.Blocks, page) -> None:
        choosers = [self.model, self.dataset, self.projects]
        blocks.load(self.refresh_choices, choosers, choosers, api_visibility="private")
        page.select(self.refresh_choices, choosers, choosers, api_visibility="private")

    def refresh_choices(self, current_model, current_dataset, current_projects):
        from web import services
        from web.services import labeling

        spec = KINDS[self.kind]
        with db_session(self.settings) as session:
            models = [(f"#{m['id']} · {m['name']} ({m['kind']})", m["id"]) for m in services.list_models(session=session)
                      if m["kind"] in {kind.value for kind in spec.model_kinds}]
            datasets = [("(none)", NO_DATASET)] + [
                (f"#{d['id']} · {d['name']}", d["id"]) for d in services.list_datasets(kind="preference", session=session)]
            projects = [(f"#{p['id']} · {p['name']} ({p['complete_pairs']}/{p['pairs']} pairs labeled)", p["id"])
                        for p in labeling.list_projects(None, session=session)]
        model_ids = [value for _, value in models]
        project_ids = {value for _, value in projects}
        # The values are left alone unless what they name has gone: this answer can land after a pick the
        # person made meanwhile (its `current_*` are from before), and must not undo it.
        return (gr.Dropdown(choices=models) if current_model in model_ids or current_model is None
                else gr.Dropdown(choices=models, value=None),
                gr.Dropdown(choices=datasets) if current_dataset in dict(datasets).values()
                else gr.Dropdown(choices=datasets, value=NO_DATASET),
                gr.CheckboxGroup(choices=projects) if all(p in project_ids for p in current_projects or [])
                else gr.CheckboxGroup(choices=projects, value=[p for p in current_projects if p in project_ids]))

    def after_submit(self, tabs: gr.Tabs, jobs_tab_id: str, on_job: Any) -> None:
        job_form.jump_to_jobs_after(self.submit_event, self.job_id, tabs, jobs_tab_id, on_job)


def count_pairs(settings, dataset_id, project_ids, include_arena) -> str:
    """How many pairs each chosen source gives now (what the job would snapshot if it started now)."""
    from db.models import Dataset, LabelingProject
    from db.settings import safe_join
    from worker.jobs.preference_pairs import arena_pairs, project_pairs

    try:
        with db_session(settings) as session:
            dataset_pairs = None
            if dataset_id:
                from llm.chat_data import read_preference

                dataset = session.get(Dataset, int(dataset_id))
                dataset_pairs = (field(dataset.stats or {}, "pairs") if dataset is not None else None)
                if not isinstance(dataset_pairs, int) and dataset is not None:
                    dataset_pairs = len(read_preference(safe_join(settings.data_dir, dataset.path)))
            by_project = {}
            for project_id in project_ids or []:
                project = session.get(LabelingProject, int(project_id))
                if project is not None:
                    by_project[f"project {project.name!r}"] = len(project_pairs(session, project.id))
            arena = len(arena_pairs(session)) if include_arena else None
    except Exception as error:  # a missing file, a bad id: say so, never break the form
        return message_html(f"Could not count the pairs: {error_text(error)}", "warn")
    return pair_counts_html(dataset_pairs, by_project, arena)


def build(settings, kind: JobKind, prefix: str, intro: str) -> PreferenceTab:
    spec = KINDS[kind]
    gr.Markdown(spec.description + " " + intro)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            model = gr.Dropdown(label="Start from (an SFT or base model)", choices=[], elem_id=f"{prefix}-model")
            with gr.Row():
                dataset = gr.Dropdown(label="Preference dataset", choices=[], elem_id=f"{prefix}-dataset")
                projects = gr.CheckboxGroup(label="Labeling projects (consensus pairs)", choices=[],
                                            elem_id=f"{prefix}-projects")
            fields = job_form.build_fields(spec, prefix, exclude=CHOOSERS)
        with gr.Column(scale=2, min_width=300):
            counts, submit, result, job_id = job_form.submit_column(prefix, "Pairs", f"Submit {spec.title} job")

    names = [*CHOOSERS, *fields]
    inputs = [model, dataset, projects, *fields.values()]

    def params_of(args) -> dict[str, Any]:
        values = dict(zip(names, args))
        values["dataset_id"] = values["dataset_id"] or None  # "(none)"
        values["project_ids"] = ",".join(str(p) for p in values["project_ids"] or []) or None
        return job_form.form_params(spec, values)

    arena_box = fields.get("include_arena")
    count_inputs = [dataset, projects] + ([arena_box] if arena_box is not None else [])

    def do_count(dataset_id, project_ids, include_arena=False):
        return count_pairs(settings, dataset_id, project_ids, include_arena)

    gr.on([component.change for component in count_inputs], do_count, count_inputs, counts,
          trigger_mode="always_last", show_progress="hidden", api_visibility="private")

    def do_submit(values: dict, request: gr.Request):
        args = [values[component] for component in inputs]
        return job_form.submit_from_form(settings, kind.value, params_of(args), request, {
            "model_id": "Choose a model to start from first (fine-tune one in Train ▸ Fine-tune).",
        })

    submit_event = submit.click(do_submit, set(inputs), [result, job_id], concurrency_limit=2,
                                api_visibility="private")
    return PreferenceTab(settings=settings, kind=kind, model=model, dataset=dataset, projects=projects,
                         submit_event=submit_event, job_id=job_id)
