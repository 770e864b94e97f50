"""The `kto` kind's own parts of its Train sub-tab: the labeling projects to choose (the reward kind's chooser), and
where other kinds show their estimate, how many good and bad answers each chosen source gives now (what the job
would snapshot if it started now), then the method and learning rate."""

from __future__ import annotations

from typing import Any

from db.models import Dataset
from db.settings import safe_join
from llm.kto_config import KTO_DEFAULTS
from web.ui import db_session, error_text
from web.ui.plots import message_html
from web.ui.train_tab import Panel
from worker.jobs.feedback_examples import gather_examples
from worker.kinds.kto.handler import sources
from worker.kinds.reward.form import choosers, method_html


def count_examples(settings, params: dict[str, Any]) -> str:
    try:
        with db_session(settings) as session:
            dataset = session.get(Dataset, int(params["dataset_id"])) if params.get("dataset_id") else None
            dataset_file = safe_join(settings.data_dir, dataset.path) if dataset else None
            items = gather_examples(session, dataset_file=dataset_file,
                                    dataset_kind=dataset.kind.value if dataset else None, **sources(params))
    except Exception as error:  # a missing file, a bad id: say so, never break the form
        return message_html(f"Could not count the answers: {error_text(error)}", "warn")
    if not items:
        return message_html("Choose where the answers come from: a feedback dataset, chat thumbs or labeling "
                            "projects.", "info")
    counts: dict[str, list[int]] = {}
    for item in items:
        counts.setdefault(item["source"], [0, 0])[0 if item["label"] else 1] += 1
    good = sum(c[0] for c in counts.values())
    bad = sum(c[1] for c in counts.values())
    parts = ", ".join(f"{source}: {c[0]:,} good / {c[1]:,} bad" for source, c in counts.items())
    return message_html(f"{good:,} good and {bad:,} bad answers ({parts})" + (
        "" if good and bad else ". KTO needs both."), "ok" if good and bad else "warn")


def render(settings, params: dict[str, Any]) -> str:
    return count_examples(settings, params) + method_html(settings, params, KTO_DEFAULTS)


PANEL = Panel("Answers", render, inputs=("dataset_id", "include_thumbs", "thumbs_model_ids", "project_ids",
                                         "model_id", "method", "lr"))

__all__ = ["PANEL", "choosers"]
