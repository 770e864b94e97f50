"""The `reward` kind's own parts of its Train sub-tab (web/ui/train_tab.py builds the rest; DPO's form.py uses
the same): the labeling projects whose consensus pairs it learns from, and, where other kinds show their
estimate, how many pairs each chosen source gives now (what the job would snapshot if it started now) and
what the method "auto" picks on the chosen model, why, and the learning rate the run gets."""

from __future__ import annotations

from typing import Any

from db.models import Dataset, LabelingProject, Model
from db.settings import safe_join
from llm.reward_config import REWARD_DEFAULTS
from llm.train_config import FineTuningDefaults
from web.ui import db_session, error_text
from web.ui.plots import field, message_html
from web.ui.train_tab import Chooser, Panel, method_note_html
from worker.jobs.params import resolve_fine_tuning
from worker.jobs.preference_pairs import arena_pairs, parse_project_ids, project_pairs


def projects(settings) -> list[tuple[str, int]]:
    from web.services import labeling

    with db_session(settings) as session:
        return [(f"#{p['id']} · {p['name']} ({p['complete_pairs']}/{p['pairs']} pairs labeled)", p["id"])
                for p in labeling.list_projects(None, session=session)]


def choosers(spec) -> list[Chooser]:
    return [Chooser("project_ids", "Labeling projects (consensus pairs)", projects, required=False, multiple=True)]


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


def count_pairs(settings, dataset_id, project_ids, include_arena) -> str:
    """How many pairs each chosen source gives now (what the job would snapshot if it started now)."""
    from llm.chat_data import read_preference

    try:
        with db_session(settings) as session:
            dataset_pairs = None
            if dataset_id:
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


def method_html(settings, params: dict[str, Any], defaults: FineTuningDefaults) -> str:
    """What the run trains on the chosen model and why, and its learning rate: resolved as submit resolves it
    (`resolve_fine_tuning`, on a copy). Nothing while no model is chosen."""
    if not params.get("model_id"):
        return ""
    lr = params.get("lr")
    given = isinstance(lr, (int, float)) and not isinstance(lr, bool)
    resolved = {"method": params.get("method") or "auto", "lr": lr if given else None}
    try:
        with db_session(settings) as session:
            model = session.get(Model, int(params["model_id"]))
            if model is None:
                return ""
            resolve_fine_tuning(resolved, defaults, model.config)
    except Exception as error:  # a method the form does not offer, a wrong id: say so, never break the form
        return message_html(f"Could not say what the run trains: {error_text(error)}", "warn")
    return method_note_html(resolved["method_reason"], resolved["lr"], given)


def pairs_panel(defaults: FineTuningDefaults) -> Panel:
    """The right-hand panel of a kind that learns from pairs with these defaults (reward, DPO): the pairs each
    source gives, then the method and learning rate."""
    def render(settings, params: dict[str, Any]) -> str:
        counts = count_pairs(settings, params.get("dataset_id"), parse_project_ids(params.get("project_ids")),
                             params.get("include_arena", False))
        return counts + method_html(settings, params, defaults)

    return Panel("Pairs", render, inputs=("dataset_id", "project_ids", "include_arena", "model_id", "method", "lr"))


PANEL = pairs_panel(REWARD_DEFAULTS)
