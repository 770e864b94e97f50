"""Which models each training job starts from, declared once (`db.models.CHAT_MODEL_KINDS`,
`LANGUAGE_MODEL_KINDS`): preference training (DPO, KTO, GRPO) continues from a base model or from any chat model,
whichever training made it — a GRPO model can be DPO'd with the team's labels — and never from a reward model."""

from __future__ import annotations

import json

import pytest

from db.models import CHAT_MODEL_KINDS, DatasetKind, ModelKind
from tests.support.records import add_base_model, add_dataset, labeled_project
from worker.jobs import lifecycle as jobs
from worker.jobs.params import JobParamsError

SHORT = {"max_steps": 2, "batch_size": 2, "block_size": 64, "device": "cpu"}


def submit_params(kind: str, model_id: int, session, settings) -> dict:  # once per test: it adds the sources
    """What each kind needs beside its model: DPO a labeling project's pairs, KTO a feedback file, GRPO prompts."""
    if kind == "dpo":
        return {"model_id": model_id, "project_ids": str(labeled_project(session).id), **SHORT}
    if kind == "kto":
        lines = [json.dumps({"prompt": f"Say {n}.", "completion": f"{n}.", "label": n % 2 == 0}) for n in range(8)]
        feedback = add_dataset(session, settings, DatasetKind.feedback, lines, "thumbs")
        return {"model_id": model_id, "dataset_id": feedback.id, **SHORT}
    prompts = add_dataset(session, settings, DatasetKind.prompts,
                          [json.dumps({"prompt": f"What is {n} plus {n}?", "answer": str(2 * n)}) for n in range(4)],
                          "sums")
    return {"model_id": model_id, "dataset_id": prompts.id, "verifier": "numeric", "num_generations": 2,
            "max_completion_length": 8, "eval_prompts": 2, **SHORT}


@pytest.mark.parametrize("kind", ["dpo", "kto", "grpo"])
def test_preference_training_starts_from_any_chat_model_and_not_a_reward_model(workbench_env, session, kind):
    model = add_base_model(session, workbench_env)
    params = submit_params(kind, model.id, session, workbench_env)
    for made_by in CHAT_MODEL_KINDS:
        model.kind = made_by
        session.commit()
        job = jobs.create_job(session, kind, params)
        assert job.params["model_id"] == model.id, made_by
    model.kind = ModelKind.reward
    session.commit()
    with pytest.raises(JobParamsError) as refused:
        jobs.create_job(session, kind, params)
    assert refused.value.field == "model_id" and f"model {model.id} is a reward model" in refused.value.message
