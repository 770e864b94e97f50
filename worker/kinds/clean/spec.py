"""The `clean` kind's declaration: FineWeb's cleaning (URL block list, HTML → text, language, Gopher/C4/FineWeb rules,
MinHash near-duplicates, PII) of a dataset into a new text dataset whose report says what each step removed and why.
Its params are `CleanConfig`'s declarations, the same `workbench clean` takes."""

from __future__ import annotations

from db.models import DatasetKind
from llm.clean_config import CleanConfig
from llm.params import settings_of
from worker.jobs.spec import DATASET_ID, JobKindSpec, Plot, TrainFormNames
from worker.kinds.clean.card import METRIC_CARDS
from worker.kinds.clean.handler import run

PARAMS = {
    "dataset_id": DATASET_ID,
    **settings_of(CleanConfig),
}

# Raw web data (HTML, WARC) is its own dataset kind where the database has it; a text dataset can be cleaned too
# (language, quality rules, near-duplicates and PII apply to plain text).
INPUT_KINDS = tuple(kind for kind in (getattr(DatasetKind, "raw", None), DatasetKind.text) if kind is not None)

SPEC = JobKindSpec(
    kind="clean", title="Clean web data",
    description="FineWeb's cleaning on datatrove: URL block list, HTML → text, language, Gopher/C4/FineWeb quality "
                "rules, MinHash near-duplicates and PII, into a new text dataset with a report of what each step "
                "removed and why.",
    params=PARAMS, handler=run, dataset_kinds=INPUT_KINDS, metric_cards=METRIC_CARDS,
    plots=(Plot("Documents left after each step", {"documents_left": "documents"}),),
    form_fields=("dataset_id", "language", "language_threshold", "url_filter", "extract_html", "language_filter",
                 "gopher_repetition", "gopher_quality", "c4_rules", "fineweb_rules", "minhash", "pii",
                 "blocked_domains"),
    form=TrainFormNames(prefix="clean", tab="Clean", tab_id="clean",
                        intro="Each step can be switched off; the defaults are FineWeb's. The report (Datasets tab, "
                              "the new dataset) shows what each step removed, why, and examples."),
)
