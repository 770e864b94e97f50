"""Lineage and report cards (web/services/lineage.py): a reward and a DPO model trained from an SFT model show
the dataset, labeling project and arena votes that made them, and their cards show what their runs measured."""

from __future__ import annotations

import json

from db.models import Job, JobStatus, Metric, Model, ModelKind
from tests.support.records import add_base_model, labeled_project
from web.services.lineage import model_lineage, report_card


def add_model(session, name, kind, parent, job):
    row = Model(name=name, kind=kind, tokenizer="gpt2", config=parent.config, path=f"models/{name}",
                parent_model_id=parent.id, job_id=job.id)
    session.add(row)
    session.commit()
    return row


def add_job(session, settings, kind, input_model, **extra):
    job = Job(kind=kind, status=JobStatus.succeeded, params={}, progress=1.0, attempts=1, cancel_requested=False,
              input_model_id=input_model.id, **extra)
    session.add(job)
    session.flush()
    job.run_dir = f"runs/{job.id}"
    (settings.data_dir / job.run_dir).mkdir(parents=True)
    session.commit()
    return job


def test_the_graph_and_the_cards(workbench_env, session):
    base = add_base_model(session, workbench_env)
    sft_job = add_job(session, workbench_env, "sft", base)
    sft = add_model(session, "chat", ModelKind.sft, base, sft_job)
    project = labeled_project(session)
    dpo_job = add_job(session, workbench_env, "dpo", sft)
    (workbench_env.data_dir / dpo_job.run_dir / "pairs_sources.json").write_text(json.dumps(
        {"counts": {"label": 2, "arena": 3}, "project_ids": [project.id], "arena": True}))
    # The run's report (llm/dpo.py) holds the figures of the weights it kept: a flag at step 4 threw away the last
    # step's, whose metric (0.5) the card must not show.
    (workbench_env.data_dir / dpo_job.run_dir / "dpo_report.json").write_text(json.dumps({
        "val_rewards/accuracies": 0.875, "kl": 0.25, "kl_per_answer": 2.5, "held_out": True,
        "evaluations": [{"step": 2}, {"step": 4}], "flag": {"step": 4, "stopped": True},
        "degeneration": "degeneration flagged at step 4: KL ...; kept the weights of step 2",
        "samples": [{"prompt": "What should I do?", "answer": "Send it kindly."}]}))
    session.add_all([Metric(job_id=dpo_job.id, step=4, name="val_rewards/accuracies", value=0.5),
                     Metric(job_id=dpo_job.id, step=2, name="val_rewards/accuracies", value=0.875)])
    session.commit()
    dpo = add_model(session, "chat-dpo", ModelKind.dpo, sft, dpo_job)

    graph = model_lineage(workbench_env, sft.id, session=session)
    labels = {node["id"]: node["label"] for node in graph["nodes"]}
    edges = {(edge["from"], edge["to"]) for edge in graph["edges"]}
    assert f"model:{base.id}" in labels and f"model:{dpo.id}" in labels  # ancestors and descendants
    assert (f"model:{sft.id}", f"job:{dpo_job.id}") in edges and (f"job:{dpo_job.id}", f"model:{dpo.id}") in edges
    assert (f"project:{project.id}", f"job:{dpo_job.id}") in edges and ("arena", f"job:{dpo_job.id}") in edges
    assert labels[f"project:{project.id}"] == "labels: p"
    assert next(n for n in graph["nodes"] if n["id"] == f"model:{sft.id}")["selected"]

    card = dict(report_card(workbench_env, dpo.id, session=session))
    assert card["DPO held-out preference accuracy"] == "87.5%"  # the kept weights', not the last step's
    assert card["KL from the policy it started from"] == "0.250 nats per token (2.50 per answer)"
    assert card["degeneration watch"].startswith("degeneration flagged at step 4")
    assert card["sample: What should I do?"] == "Send it kindly."
    from llm.model import GPT, GPTConfig

    expected = sum(p.numel() for p in GPT(GPTConfig.from_dict(base.config)).parameters())
    assert card["parameters"] == f"{expected:,}"


def test_the_report_card_never_calls_a_negative_number_kl(tmp_path):
    """The estimate of runs before the degeneration watch (mean log-ratio of 16 sampled answers) went below 0 for a
    policy that barely moved: it is named a log-ratio, and a negative one says it is noise. Today's KL is exact per
    token, never negative (tests/llm/test_degeneration.py)."""
    from worker.kinds.dpo.card import run_report

    (tmp_path / "dpo_report.json").write_text(json.dumps({"val_rewards/accuracies": 0.5, "kl": -0.042}))
    rows = dict(run_report(tmp_path))
    assert not any("KL from" in label for label in rows)
    assert rows["log-ratio to the start on sampled answers (older runs' KL estimate)"] == (
        "-0.042 nats per answer (below 0: sampling noise, not a KL)")
    (tmp_path / "dpo_report.json").write_text(json.dumps({"kl": 0.01, "kl_per_answer": 0.3, "evaluations": [{}]}))
    assert dict(run_report(tmp_path))["KL from the policy it started from"] == "0.010 nats per token (0.30 per answer)"


def test_the_graph_is_drawn_left_to_right():
    from web.ui.lineage_view import layers, lineage_figure

    graph = {"nodes": [{"id": "dataset:1", "type": "dataset", "label": "chats"},
                       {"id": "model:1", "type": "model", "label": "base"},
                       {"id": "job:2", "type": "job", "label": "job #2 sft"},
                       {"id": "model:2", "type": "model", "label": "chat", "selected": True}],
             "edges": [{"from": "dataset:1", "to": "job:2"}, {"from": "model:1", "to": "job:2"},
                       {"from": "job:2", "to": "model:2"}]}
    assert layers(graph) == {"dataset:1": 0, "model:1": 0, "job:2": 1, "model:2": 2}
    figure = lineage_figure(graph)
    texts = {text.get_text() for text in figure.axes[0].texts}
    assert {"chats", "base", "job #2 sft", "chat"} <= texts


def test_a_deleted_dataset_stays_marked_deleted_and_the_tokenizer_job_is_shown(workbench_env, session):
    from db.models import Dataset, DatasetKind
    from db.users import create_user
    from web.services import delete_dataset

    owner = create_user(session, "owner", "owner-password", "trainer")
    corpus, chats = (Dataset(name=name, kind=kind, format="txt", path=f"datasets/{name}", original_filename=name,
                             size_bytes=1, stats={}, owner_id=owner.id)
                     for name, kind in (("corpus", DatasetKind.text), ("chats", DatasetKind.chat)))
    session.add_all([corpus, chats])
    session.commit()
    tokenizer_job = Job(kind="train_tokenizer", status=JobStatus.succeeded, params={"name": "tok", "dataset_id":
                        corpus.id}, dataset_id=corpus.id, owner_id=owner.id)
    pretrain = Job(kind="pretrain", status=JobStatus.succeeded, params={"dataset_id": corpus.id, "tokenizer": "tok"},
                   dataset_id=corpus.id, owner_id=owner.id)
    session.add_all([tokenizer_job, pretrain])
    session.commit()
    base = Model(name="base", kind=ModelKind.base, tokenizer="tok", config={}, path="models/base", job_id=pretrain.id)
    session.add(base)
    session.commit()
    sft_job = Job(kind="sft", status=JobStatus.succeeded, params={"dataset_id": chats.id, "model_id": base.id},
                  dataset_id=chats.id, input_model_id=base.id, owner_id=owner.id)
    session.add(sft_job)
    session.commit()
    sft = add_model(session, "chat", ModelKind.sft, base, sft_job)
    delete_dataset(session, workbench_env, chats.id, owner)

    graph = model_lineage(workbench_env, sft.id, session=session)
    nodes = {node["id"]: node for node in graph["nodes"]}
    edges = {(edge["from"], edge["to"]) for edge in graph["edges"]}
    assert nodes[f"dataset:{chats.id}"]["label"] == "chats (deleted)" and nodes[f"dataset:{chats.id}"]["deleted"]
    assert (f"dataset:{chats.id}", f"job:{sft_job.id}") in edges  # was: silently left out
    assert ("tokenizer:tok", f"job:{pretrain.id}") in edges and (f"job:{tokenizer_job.id}", "tokenizer:tok") in edges
    assert (f"dataset:{corpus.id}", f"job:{tokenizer_job.id}") in edges
    assert nodes["tokenizer:tok"]["label"] == "tokenizer tok"
    assert not any(node.get("deleted") for key, node in nodes.items() if key != f"dataset:{chats.id}")


def crowded_graph() -> dict:
    """Data, a tokenizer, labels and votes feeding a chain of models at different depths: long edges, several
    nodes a column, labels long enough to wrap."""
    nodes = [("dataset:1", "dataset", "a pretraining corpus of web pages (text)"), ("dataset:2", "dataset",
             "chats (deleted)"), ("dataset:3", "dataset", "prompts"), ("job:1", "job", "job #1 train_tokenizer"),
             ("tokenizer:t", "tokenizer", "tokenizer t"), ("job:2", "job", "job #2 pretrain"),
             ("model:1", "model", "base (base)"), ("job:3", "job", "job #3 sft"), ("model:2", "model", "chat (sft)"),
             ("project:1", "labels", "labels: first project"), ("arena", "arena", "arena votes"),
             ("job:4", "job", "job #4 reward"), ("model:3", "model", "rm (reward)"), ("job:5", "job", "job #5 dpo"),
             ("model:4", "model", "chat-dpo-with-a-very-long-name (dpo)")]
    edges = [("dataset:1", "job:1"), ("job:1", "tokenizer:t"), ("tokenizer:t", "job:2"), ("dataset:1", "job:2"),
             ("job:2", "model:1"), ("model:1", "job:3"), ("dataset:2", "job:3"), ("job:3", "model:2"),
             ("model:2", "job:4"), ("project:1", "job:4"), ("arena", "job:4"), ("job:4", "model:3"),
             ("model:2", "job:5"), ("project:1", "job:5"), ("dataset:3", "job:5"), ("model:3", "job:5"),
             ("job:5", "model:4"), ("dataset:1", "job:5")]
    return {"nodes": [{"id": key, "type": kind, "label": label, "deleted": "deleted" in label}
                      for key, kind, label in nodes],
            "edges": [{"from": a, "to": b} for a, b in edges]}


def crosses(segment, box, inset=1e-6) -> bool:
    """Whether a segment passes through a box's inside (Liang-Barsky clipping)."""
    (x0, y0), (x1, y1) = segment
    x, y, width, height = box
    left, right = x - width / 2 + inset, x + width / 2 - inset
    top, bottom = y - height / 2 + inset, y + height / 2 - inset
    low, high = 0.0, 1.0
    for p, q in ((x0 - x1, x0 - left), (x1 - x0, right - x0), (y0 - y1, y0 - top), (y1 - y0, bottom - y0)):
        if p == 0:
            if q < 0:
                return False
        else:
            t = q / p
            if p < 0:
                low = max(low, t)
            else:
                high = min(high, t)
    return low < high


def test_the_layout_is_in_layers_left_to_right_and_no_edge_goes_through_a_box():
    from web.ui.lineage_view import layers, layout

    graph = crowded_graph()
    placed, depth = layout(graph), layers(graph)
    boxes = placed.boxes
    assert depth["dataset:2"] == depth["job:3"] - 1 and depth["dataset:3"] == depth["job:5"] - 1  # sources beside use
    for key, (x, y, width, height) in boxes.items():  # no two boxes overlap
        for other, (x2, y2, width2, height2) in boxes.items():
            if key < other:
                assert abs(x - x2) >= (width + width2) / 2 or abs(y - y2) >= (height + height2) / 2, (key, other)
    assert len(placed.edges) == len(graph["edges"])
    for source, target, points in placed.edges:
        assert boxes[source][0] < boxes[target][0]  # left to right
        assert points[0][0] == boxes[source][0] + boxes[source][2] / 2  # leaves its source's right side
        assert points[-1][0] == boxes[target][0] - boxes[target][2] / 2  # enters its target's left side
        for segment in zip(points, points[1:]):
            assert segment[0][0] <= segment[1][0]
            for key, box in boxes.items():
                assert not crosses(segment, box), f"{source} → {target} goes through {key}"


def test_the_drawn_labels_are_readable_inside_their_boxes():
    from web.ui.lineage_view import FONT_SIZE, lineage_figure, layout

    graph = crowded_graph()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = lineage_figure(graph)
    renderer = FigureCanvasAgg(figure).get_renderer()
    placed = layout(graph)
    texts = {text.get_text(): text for text in figure.axes[0].texts}
    inch = figure.dpi
    extents = []
    for node in graph["nodes"]:
        text = texts["\n".join(placed.lines[node["id"]])]
        assert text.get_fontsize() >= FONT_SIZE >= 9
        extent = text.get_window_extent(renderer)
        x, y, width, height = placed.boxes[node["id"]]
        top = figure.get_figheight() - y  # the layout counts from the top; the figure's pixels from the bottom
        assert (x - width / 2) * inch <= extent.x0 and extent.x1 <= (x + width / 2) * inch, node["label"]
        assert (top - height / 2) * inch <= extent.y0 and extent.y1 <= (top + height / 2) * inch, node["label"]
        extents.append(extent)
    assert not any(a.overlaps(b) for i, a in enumerate(extents) for b in extents[i + 1:])
    assert "chat-dpo-with-a-very-long-name (dpo)" not in texts  # a long label is wrapped, not cramped


def test_the_models_tab_shows_the_card_and_the_graph(workbench_env, session):
    import gradio as gr

    from web.ui.models_tab import build

    base = add_base_model(session, workbench_env)
    sft_job = add_job(session, workbench_env, "sft", base)
    session.add(Metric(job_id=sft_job.id, step=3, name="val_loss", value=1.25))
    session.commit()
    sft = add_model(session, "chat", ModelKind.sft, base, sft_job)
    with gr.Blocks() as blocks:
        build(workbench_env)
    show = next(fn.fn for fn in blocks.fns.values() if fn.fn is not None and fn.fn.__name__ == "show_model")
    card, figure, text = show(sft.id)
    assert f"job #{sft_job.id} sft → chat (sft)" in text
    assert "validation loss" in card and "1.2500" in card
    assert {"chat (sft)", "tiny-base (base)", f"job #{sft_job.id} sft"} <= {t.get_text() for t in figure.axes[0].texts}
