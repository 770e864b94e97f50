"""What the Train forms say and accept before a job is queued: the schedule notes under the fields, the
memory warning of the estimates, datasets never chosen for the person, the Tokenizer sub-tab (built from
the train_tokenizer declaration) and a trained tokenizer offered by Pretrain. Real database and handlers,
no browser (tests/e2e/test_ui_e2e.py drives one).
"""

from __future__ import annotations

import json

import gradio as gr
from sqlalchemy import func, select

from db.models import Dataset, DatasetKind, Job
from web import services
from web.ui import job_form
from worker.kinds import KINDS

PRETRAIN = KINDS["pretrain"]
SFT = KINDS["sft"]


def add_text_dataset(session, name: str = "stories") -> Dataset:
    row = Dataset(name=name, kind=DatasetKind.text, format="txt", path="datasets/x/corpus.txt",
                  original_filename="corpus.txt", size_bytes=10_000, stats={"documents": 50, "bytes": 10_000})
    session.add(row)
    session.commit()
    return row


# ----------------------------------------------------------------------------- notes before submit

def test_schedule_notes_say_how_the_defaults_shrink_and_what_submit_refuses():
    assert job_form.schedule_notes(PRETRAIN, {}) == []  # the defaults fit the default run
    [(level, text)] = job_form.schedule_notes(PRETRAIN, {"max_steps": 100, "warmup": 100, "eval_every": 250,
                                                         "checkpoint_every": 500})
    assert level == "info" and "warmup 100 → 10" in text and "eval_every 250 → 25" in text
    notes = dict(job_form.schedule_notes(PRETRAIN, {"max_steps": 100, "warmup": 150, "eval_every": 400}))
    assert "warmup 150 ≥ max_steps 100: the learning rate never decays" in notes["error"]
    assert "submit refuses" in notes["error"]
    assert "evaluated only once" in notes["warn"]
    # SFT's own defaults (200 steps) are the reference for the Fine-tune form.
    [(level, text)] = job_form.schedule_notes(SFT, {"max_steps": 20})
    assert level == "info" and "eval_every 50 → 5" in text
    assert job_form.schedule_notes(PRETRAIN, {"max_steps": "many"}) == []  # submit names a wrong value
    html = job_form.schedule_notes_html(PRETRAIN, {"max_steps": 10, "warmup": 20})
    assert "wb-msg-error" in html and "never decays" in html


def test_the_estimate_warns_when_the_workers_have_less_memory(workbench_env):
    fits = services.estimate_run("pretrain", {"max_steps": 10})
    assert 0 < fits["memory_bytes"] < fits["worker_memory_bytes"]
    assert job_form.memory_note_html(fits) == ""
    too_big = services.estimate_run("pretrain", {"batch_size": 4096, "block_size": 8192})
    note = job_form.memory_note_html(too_big)
    assert "wb-msg-error" in note and "needs about" in note and "submit refuses" in note
    # The shape overrides count: a wider model needs more.
    wider = services.estimate_run("pretrain", {"n_embd": 256, "n_head": 4})
    assert wider["memory_bytes"] > fits["memory_bytes"] and wider["config"]["n_embd"] == 256


def test_required_fields_say_so_instead_of_offering_a_default():
    with gr.Blocks():
        fields = job_form.build_fields(KINDS["train_tokenizer"], "tok", exclude=("dataset_id",))
    assert fields["vocab_size"].placeholder == "required" and fields["name"].placeholder == "required"
    with gr.Blocks():
        pretrain_fields = job_form.build_fields(PRETRAIN, "pt", exclude=("dataset_id", "tokenizer", "preset"))
    assert pretrain_fields["n_layer"].placeholder == "empty: default"


# ----------------------------------------------------------------------------- datasets are chosen by people

def test_no_dataset_is_chosen_for_the_person(workbench_env, session):
    from web.ui import train_tab

    dataset = add_text_dataset(session)
    with gr.Blocks():
        pretrain = train_tab.build(workbench_env, PRETRAIN)
        tokenizer = train_tab.build(workbench_env, KINDS["train_tokenizer"])
    # A refresh offers the choices and leaves the value alone (not even sent: a pick made while the
    # refresh was under way stays), unless the chosen dataset has gone.
    dropdown, _ = pretrain.refresh_choices(None, None)
    assert "value" not in dropdown.constructor_args and dataset.id in [value for _, value in dropdown.choices]
    kept, _ = pretrain.refresh_choices(dataset.id, None)
    assert "value" not in kept.constructor_args
    gone, _ = pretrain.refresh_choices(dataset.id + 1000, None)
    assert "value" in gone.constructor_args and gone.value is None
    dropdown, _ = tokenizer.refresh_choices(None)
    assert "value" not in dropdown.constructor_args


def test_submitting_without_a_dataset_names_it_and_queues_nothing(workbench_env, session, job_queue):
    add_text_dataset(session)
    message, job_id = job_form.submit_from_form(
        workbench_env, "pretrain", job_form.form_params(PRETRAIN, {"dataset_id": None, "max_steps": 10}), None,
        {"dataset_id": "Dataset: none is chosen."})
    assert job_id is None and "Dataset: none is chosen." in message
    assert session.scalar(select(func.count()).select_from(Job)) == 0


# ----------------------------------------------------------------------------- the Tokenizer sub-tab

def test_the_tokenizer_sub_tab_comes_before_pretrain_which_stays_the_landing_tab(tmp_path, monkeypatch):
    from db.settings import get_settings
    from web.ui import build_ui

    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DATABASE_URL", f"sqlite:///{tmp_path}/never-created.db")
    blocks = build_ui(get_settings())
    tabs = [block for block in blocks.blocks.values() if isinstance(block, gr.Tab)]
    order = [tab.elem_id for tab in tabs]
    assert order.index("tab-tokenizer") < order.index("tab-pretrain")
    inner = next(block for block in blocks.blocks.values()
                 if isinstance(block, gr.Tabs) and any(child.elem_id == "tab-tokenizer" for child in block.children))
    assert inner.selected == "pretrain"
    ids = {getattr(block, "elem_id", None) for block in blocks.blocks.values()}
    assert {"tok-dataset", "tok-vocab-size", "tok-name", "tok-submit", "pt-schedule", "ft-schedule"} <= ids


def test_a_tokenizer_job_is_queued_from_its_form_and_a_trained_one_is_offered_to_pretrain(workbench_env, session,
                                                                                        job_queue):
    from web.ui import train_tab

    dataset = add_text_dataset(session)
    spec = KINDS["train_tokenizer"]
    params = job_form.form_params(spec, {"dataset_id": dataset.id, "vocab_size": "512", "name": " village-bpe "})
    message, job_id = job_form.submit_from_form(workbench_env, "train_tokenizer", params, None, {})
    assert job_id is not None, message
    job = session.get(Job, job_id)
    assert job.kind == "train_tokenizer" and job.params == {"dataset_id": dataset.id, "vocab_size": 512,
                                                                   "name": "village-bpe"}

    # What the job writes when it succeeds (llm.tokenizer's layout) is offered by Pretrain and listed.
    trained = workbench_env.data_dir / "tokenizers" / "village-bpe"
    trained.mkdir(parents=True)
    (trained / "tokenizer.json").write_text(json.dumps({"name": "village-bpe", "vocab_size": 517}))
    with gr.Blocks():
        pretrain = train_tab.build(workbench_env, PRETRAIN)
        tokenizer = train_tab.build(workbench_env, spec)
    _, tokenizers = pretrain.refresh_choices(None, None)
    assert "village-bpe" in [value for _, value in tokenizers.choices]
    _, listed = tokenizer.refresh_choices(None)
    assert "village-bpe" in listed and "517 tokens" in listed


# ----------------------------------------------------------------------------- sub-tabs from the registry

def test_every_kind_in_the_registry_has_a_train_sub_tab(tmp_path, monkeypatch):
    from db.settings import get_settings
    from web.ui import build_ui

    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DATABASE_URL", f"sqlite:///{tmp_path}/never-created.db")
    blocks = build_ui(get_settings())
    ids = {getattr(block, "elem_id", None) for block in blocks.blocks.values()}
    for spec in KINDS.values():
        names = spec.form_names
        assert {f"tab-{names.tab_id}", f"{names.prefix}-submit", f"{names.prefix}-result",
                f"{names.prefix}-estimate"} <= ids, spec.kind


def test_a_kind_without_form_code_gets_a_working_sub_tab(workbench_env, session, job_queue):
    """The prepare kind has no form.py: its sub-tab is its declaration alone, and it queues a job."""
    from web.ui import train_tab

    spec = KINDS["prepare"]
    assert train_tab.kind_form_module(spec) is None
    dataset = add_text_dataset(session)
    with gr.Blocks() as blocks:
        tab = train_tab.build(workbench_env, spec)
    datasets, tokenizers = tab.refresh_choices(None, "gpt2")
    assert dataset.id in [value for _, value in datasets.choices] and "value" not in datasets.constructor_args
    assert "gpt2" in [value for _, value in tokenizers.choices]
    submit = next(fn for fn in blocks.fns.values() if fn.fn is not None and fn.fn.__name__ == "do_submit")
    values = {component: getattr(component, "value", None) for component in submit.inputs}
    message, job_id = submit.fn(values, None)
    assert job_id is None and "Choose a dataset first" in message
    values[tab.inputs["dataset_id"]], values[tab.inputs["val_fraction"]] = dataset.id, " 0.1 "
    message, job_id = submit.fn(values, None)
    assert job_id, message
    job = session.get(Job, job_id)
    assert job.kind == "prepare" and job.params == {"dataset_id": dataset.id, "tokenizer": "gpt2",
                                                    "val_fraction": 0.1, "seed": 0, "scrub_pii": False}


def test_the_evaluate_sub_tab_picks_several_models(workbench_env, session, job_queue):
    """A kind that takes several models (`model_ids`) gets checkboxes of the models of its kinds, with no code of
    its own: what is ticked is what the job compares."""
    from db.models import Model, ModelKind
    from web.ui import train_tab

    spec = KINDS["evaluate"]
    dataset = add_text_dataset(session)
    models = [Model(name=f"m{index}", kind=kind, tokenizer="gpt2", path=f"models/m{index}", config={})
              for index, kind in enumerate((ModelKind.base, ModelKind.sft, ModelKind.reward))]
    session.add_all(models)
    session.commit()
    with gr.Blocks() as blocks:
        tab = train_tab.build(workbench_env, spec)
    picker, datasets = tab.refresh_choices([], None)
    offered = [value for _, value in picker.choices]
    assert offered == [models[1].id, models[0].id]  # newest first; a reward model writes no text to score
    submit = next(fn for fn in blocks.fns.values() if fn.fn is not None and fn.fn.__name__ == "do_submit")
    values = {component: getattr(component, "value", None) for component in submit.inputs}
    values[tab.inputs["dataset_id"]] = dataset.id
    message, job_id = submit.fn(values, None)
    assert job_id is None and "Choose one or more models first" in message
    values[tab.inputs["model_ids"]] = offered
    message, job_id = submit.fn(values, None)
    assert job_id, message
    assert session.get(Job, job_id).params["model_ids"] == offered


# ----------------------------------------------------------------------------- a wrong value, said under its field

def submit_parts(blocks: gr.Blocks):
    """The Train form's submit (its handler and Gradio's validator run before it) and the browser-side
    listener of the same click that empties the result."""
    submit = next(fn for fn in blocks.fns.values() if fn.fn is not None and fn.fn.__name__ == "do_submit")
    [clear] = [fn for fn in blocks.fns.values() if fn.fn is None and fn.js and fn.targets == submit.targets]
    return submit, clear


def test_a_wrong_value_is_said_under_its_field_with_its_label_and_bound(workbench_env, session, job_queue):
    """Issue 19 item 13: Gradio's own bound check answered "Error × Value 0 is less than minimum value 8" in a
    toast, twice, naming no field, and the last submit's badge stayed. Now the validator Gradio runs before
    the submit marks each wrong field with its label and bound, clears the others, and nothing is queued."""
    from web.ui import train_tab

    dataset = add_text_dataset(session)
    with gr.Blocks() as blocks:
        tab = train_tab.build(workbench_env, PRETRAIN)
    numbers = [component for component in tab.inputs.values() if isinstance(component, gr.Number)]
    assert numbers and all(number.minimum is None and number.maximum is None for number in numbers)
    submit, clear = submit_parts(blocks)
    assert submit.validator is not None and clear.outputs == [next(iter(submit.outputs))]
    assert clear.js.replace(" ", "") == "()=>''"  # the result is emptied before anything else answers

    values = {component: getattr(component, "value", None) for component in submit.inputs}
    values[tab.inputs["dataset_id"]] = dataset.id
    values[tab.inputs["lr"]], values[tab.inputs["block_size"]] = 0, 4
    marks = submit.validator(values)
    assert set(marks) == set(tab.inputs.values())  # every field: a wrong one gets its error, the others none
    wrong = {name: marks[component]["message"] for name, component in tab.inputs.items()
             if not marks[component]["is_valid"]}
    assert wrong == {"lr": "Learning rate: must be greater than 0, got 0.0",
                     "block_size": "Block size: must be at least 8, got 4"}
    assert all(mark["message"] == "" for mark in marks.values() if mark["is_valid"])
    [(do_estimate, _, _)] = tab.on_load  # the estimate beside the form says the first one the same way
    assert "Estimate unavailable: Block size: must be at least 8, got 4" in do_estimate(
        *[values[component] for component in tab.inputs.values()])

    # Fixed, block size is no longer marked; a text field that is not a number is named too.
    values[tab.inputs["lr"]], values[tab.inputs["block_size"]] = 1e-3, 64
    values[tab.inputs["n_layer"]] = "two"
    marks = submit.validator(values)
    assert [(name, marks[component]["message"]) for name, component in tab.inputs.items()
            if not marks[component]["is_valid"]] == [("n_layer", "N layer: must be a whole number, got 'two'")]
    values[tab.inputs["n_layer"]] = ""
    assert all(mark["is_valid"] for mark in submit.validator(values).values())

    # An empty required chooser is marked with the sentence the submit says.
    values[tab.inputs["dataset_id"]] = None
    marks = submit.validator(values)
    assert not marks[tab.inputs["dataset_id"]]["is_valid"]
    assert marks[tab.inputs["dataset_id"]]["message"].startswith("Choose a dataset first (upload one in Datasets")
    assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_a_refusal_only_the_server_makes_is_said_under_the_field_it_names(workbench_env, session, job_queue):
    """The kind's own checks (a warmup as long as the run, a batch too big for the workers) run in the validator
    too, so their refusal is said under the field they name, with its label, and nothing is queued; a form that
    submit would take is marked clean."""
    from web.ui import train_tab

    dataset = add_text_dataset(session)
    with gr.Blocks() as blocks:
        tab = train_tab.build(workbench_env, PRETRAIN)
    submit, _ = submit_parts(blocks)
    values = {component: getattr(component, "value", None) for component in submit.inputs}
    values[tab.inputs["dataset_id"]] = dataset.id
    values[tab.inputs["max_steps"]], values[tab.inputs["warmup"]] = 10, 20
    marks = submit.validator(values)
    wrong = {name: marks[component]["message"] for name, component in tab.inputs.items()
             if not marks[component]["is_valid"]}
    assert list(wrong) == ["warmup"] and wrong["warmup"].startswith("Warmup: ") and "never decays" in wrong["warmup"]

    values[tab.inputs["warmup"]] = 2
    values[tab.inputs["batch_size"]], values[tab.inputs["block_size"]] = 4096, 8192
    marks = submit.validator(values)
    wrong = {name: marks[component]["message"] for name, component in tab.inputs.items()
             if not marks[component]["is_valid"]}
    assert list(wrong) in (["batch_size"], ["block_size"]) and "needs about" in next(iter(wrong.values()))

    values[tab.inputs["batch_size"]], values[tab.inputs["block_size"]] = 8, 64
    assert all(mark["is_valid"] for mark in submit.validator(values).values())
    assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_a_required_setting_left_empty_is_marked_as_required():
    errors = job_form.field_errors(KINDS["train_tokenizer"], {"dataset_id": 1, "name": "bpe"})
    assert errors == {"vocab_size": "Vocab size: is required"}
    assert job_form.field_errors(KINDS["train_tokenizer"], {"name": "bpe", "vocab_size": 512},
                                 {"dataset_id": "Choose a dataset first."}) == {"dataset_id": "Choose a dataset first."}
