"""The `generate` kind's declaration: K candidate answers per prompt of a prompts dataset, from one or two models
(model B may be model A again at another temperature), for people to compare."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy.orm import Session

from db.models import LANGUAGE_MODEL_KINDS, DatasetKind, Model
from db.settings import Settings
from llm.candidates import MAX_CANDIDATES, MAX_SEED
from llm.params import Setting
from worker.jobs.params import JobParamsError
from worker.jobs.references import check_reference
from worker.jobs.spec import MODEL_ID, JobKindSpec, TrainFormNames
from worker.kinds.generate.card import METRIC_CARDS, PLOTS
from worker.kinds.generate.handler import greedy, run, slots

# Models that write answers (not reward models).
MODEL_KINDS = LANGUAGE_MODEL_KINDS

PARAMS = {
    "dataset_id": Setting("int", required=True, minimum=1, label="prompts dataset",
                          help="id of a prompts dataset (.txt one prompt a line, or .jsonl with a prompt field)"),
    "model_id": Setting(**{**vars(MODEL_ID), "label": "model A", "help": "id of the model that answers"}),
    "model_id_b": Setting("int", minimum=1, label="model B",
                          help="a second model (or model A again, e.g. at another temperature); the K answers "
                               "of each prompt are then split between A and B"),
    "k": Setting("int", default=2, minimum=2, maximum=MAX_CANDIDATES, label="answers per prompt (K)",
                 help="candidate answers per prompt, from A and B together; K answers give K(K-1)/2 pairs"),
    "temperature": Setting("float", default=0.8, minimum=0.0, maximum=5.0,
                           help="sampling temperature of model A (0 = greedy: every answer the same)"),
    "temperature_b": Setting("float", minimum=0.0, maximum=5.0, label="temperature B",
                             help="sampling temperature of model B; empty: the same as model A's"),
    "top_k": Setting("int", minimum=1, label="top-k", help="sample among the k most likely tokens; empty: all"),
    "top_p": Setting("float", default=0.95, minimum=0.0, exclusive_minimum=True, maximum=1.0, label="top-p",
                     help="sample from the smallest set of tokens whose probability reaches top-p"),
    "max_new_tokens": Setting("int", default=256, minimum=1, maximum=4096, label="max new tokens",
                              help="longest answer, in tokens (also bounded by the model's context)"),
    "seed": Setting("int", minimum=0, maximum=MAX_SEED,
                    help="seed of the whole run; empty: a random one, stored with the job"),
}


def check(session: Session, params: dict[str, Any], settings: Settings) -> None:
    # The seed is drawn now, so the stored row says what runs and a resumed job draws the same answers.
    if params.get("seed") is None:
        params["seed"] = secrets.randbelow(MAX_SEED + 1)
    if params.get("model_id_b") is None:
        if params.get("temperature_b") is not None:
            raise JobParamsError("temperature_b", "applies to model B only: choose a model B or leave it empty")
    else:
        check_reference(session, SPEC, "model_id_b", Model, params["model_id_b"], MODEL_KINDS)
        params.setdefault("temperature_b", params["temperature"])
    # Greedy decoding writes the same answer every time: such answers make pairs with nothing to choose.
    shares = slots(params)
    for slot in shares:
        if slot.count > 1 and greedy(slot.temperature, params):
            field = "top_k" if params.get("top_k") == 1 else ("temperature", "temperature_b")[slot.index]
            raise JobParamsError(field, f"greedy decoding would give the {slot.count} answers of "
                                        f"model {'AB'[slot.index]} to a prompt identical; sample (temperature > 0, "
                                        f"top-k above 1) or give each model one answer")
    if len(shares) == 2 and shares[0].model_id == shares[1].model_id and shares[0].temperature == \
            shares[1].temperature and greedy(shares[0].temperature, params):
        raise JobParamsError("temperature_b", "model B is model A, greedy, at the same temperature: its answers "
                                              "would be A's; choose another model or temperature")


SPEC = JobKindSpec(
    kind="generate", title="Generate candidates",
    description="Answer every prompt of a prompts dataset K times (one or two models, through the chat "
                "template), storing each answer with the settings and seed that reproduce it, for labeling.",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.prompts,), model_kinds=MODEL_KINDS, check=check,
    metric_cards=METRIC_CARDS, plots=PLOTS,
    form_fields=("dataset_id", "model_id", "model_id_b", "k", "temperature", "temperature_b", "top_p", "top_k",
                 "max_new_tokens", "seed"),
    form=TrainFormNames(prefix="gen", tab="Candidates", tab_id="candidates",
                        intro="Pair the answers for people to compare in Label ▸ Projects."),
)
