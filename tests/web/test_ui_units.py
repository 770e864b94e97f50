"""The UI's pure helpers: plot data shaping, progress bars and tables, form → params, chat prompts,
and the chat model cache (LRU eviction, reload on change, one load under concurrency).

No browser and no server here (tests/e2e/test_ui_e2e.py drives the real thing).
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from web.ui import can_write, header_html
from worker.jobs.spec import LOSS_PLOT
from web.ui.plots import (dataset_stat_cards, format_metric, histogram_figure,
                          histogram_frame, human_bytes, human_count, human_duration, jobs_table_html,
                          latest_metrics, message_html, metrics_frame, metrics_signature, progress_bar_html,
                          stat_cards_html, status_badge_html)


def rec(step, name, value):
    return {"step": step, "name": name, "value": value}


# ----------------------------------------------------------------------------- metrics → plot frames

def test_metrics_frame_keeps_requested_series_in_long_format_sorted_by_step():
    records = [rec(20, "loss", 2.0), rec(10, "loss", 3.0), rec(20, "val_loss", 2.5), rec(20, "lr", 1e-3),
               rec(20, "val_bpb", 1.2)]
    frame = metrics_frame(records, LOSS_PLOT.series)
    assert list(frame.columns) == ["step", "value", "series"]
    assert frame.to_dict("records") == [
        {"step": 10, "value": 3.0, "series": "train loss"},
        {"step": 20, "value": 2.0, "series": "train loss"},
        {"step": 20, "value": 2.5, "series": "val loss"},
    ]
    assert frame["step"].dtype == "int64" and frame["value"].dtype == "float64"
    assert metrics_frame(records, {"val_bpb": "val bits/byte"})["value"].tolist() == [1.2]


def test_metrics_frame_drops_non_finite_values_and_keeps_the_last_value_of_a_repeated_step():
    # A resumed run logs its resume step again; a diverged step reports inf/nan.
    records = [rec(1, "loss", 5.0), rec(2, "loss", float("nan")), rec(3, "loss", float("inf")),
               rec(1, "loss", 4.0), rec(None, "loss", 1.0), rec(4, "loss", None)]
    frame = metrics_frame(records, LOSS_PLOT.series)
    assert frame[["step", "value"]].values.tolist() == [[1, 4.0]]


def test_metrics_frame_of_nothing_is_an_empty_frame_with_the_plot_columns():
    frame = metrics_frame([], LOSS_PLOT.series)
    assert frame.empty and list(frame.columns) == ["step", "value", "series"]


def test_a_long_run_is_thinned_to_a_few_hundred_points_per_series_keeping_its_extremes():
    from web.ui.plots import MAX_POINTS_PER_SERIES, thin_curves

    records = [rec(step, "loss", 1.0 / step) for step in range(1, 5001)] + [rec(2500, "loss", 9.0)]  # a spike
    records += [rec(step, "val_loss", 2.0) for step in range(100, 5001, 100)]
    frame = thin_curves(metrics_frame(records, LOSS_PLOT.series))
    loss = frame[frame["series"] == "train loss"]
    assert len(loss) <= MAX_POINTS_PER_SERIES + 2
    assert loss["step"].iloc[0] == 1 and loss["step"].iloc[-1] == 5000 and loss["step"].is_monotonic_increasing
    assert loss["value"].max() == 9.0 and loss["value"].min() == 1.0 / 5000  # the spike and the lowest point
    assert len(frame[frame["series"] == "val loss"]) == 50  # short series are kept whole


def test_latest_metrics_and_signature():
    records = [rec(10, "loss", 3.0), rec(20, "loss", 2.0), rec(20, "val_bpb", 1.1), rec(10, "mfu", 0.2)]
    assert latest_metrics(records) == {"loss": (20, 2.0), "val_bpb": (20, 1.1), "mfu": (10, 0.2)}
    assert metrics_signature([]) == (0,)
    assert metrics_signature(records) != metrics_signature(records + [rec(30, "loss", 1.9)])
    assert metrics_signature(records) == metrics_signature(list(records))


# ----------------------------------------------------------------------------- histogram

def test_histogram_frame_from_the_services_log2_summary():
    from web.services import length_histogram

    summary = length_histogram([1, 3, 3, 100, 120, 5000])
    frame = histogram_frame(summary)
    assert frame["documents"].sum() == 6
    assert list(frame["low"])[:2] == summary["edges"][:2]
    assert frame["bin"].iloc[0] == "1–2"
    assert frame["bin"].iloc[-1].endswith("K")  # 4096–8192 reads "4.096K–8.192K"


@pytest.mark.parametrize("bad", [None, {}, {"edges": [1], "counts": []}, {"edges": [1, 2, 4], "counts": [1]}])
def test_histogram_frame_of_malformed_input_is_empty(bad):
    assert histogram_frame(bad).empty


def test_histogram_figure_draws_one_bar_per_bin_and_notes_the_median():
    summary = {"edges": [64, 128, 256, 512], "counts": [4, 80, 116], "min": 70, "median": 275, "mean": 255.3,
               "max": 500}
    fig = histogram_figure(summary)
    ax = fig.axes[0]
    assert len(ax.patches) == 3
    assert [p.get_height() for p in ax.patches] == [4, 80, 116]
    assert "median 275" in ax.get_title()
    empty = histogram_figure(None)
    assert not empty.axes[0].patches


def test_dataset_stat_cards():
    dataset = {"size_bytes": 51_800, "format": "txt",
               "stats": {"documents": 1200, "duplicates_removed": 3, "empty_removed": 1,
                         "length_histogram": {"edges": [1, 2], "counts": [1], "median": 275}}}
    cards = dict(dataset_stat_cards(dataset))
    assert cards["documents"] == "1,200"
    assert cards["duplicates removed"] == "3"
    assert cards["size"] == "50.6 KB"
    assert cards["median length"] == "275 chars"


# ----------------------------------------------------------------------------- progress bars, tables, cards

def bar_width(html: str) -> str:
    return html.split("width:", 2)[1].split(";")[0] if "wb-bar-fill" in html else ""


@pytest.mark.parametrize("progress,status,expected", [
    (0.456, "running", 46), (1.7, "running", 100), (-1, "running", 0), (None, "queued", 0),
    (float("nan"), "running", 0), ("junk", "running", 0), (0.3, "succeeded", 100), (0.3, "failed", 30),
])
def test_progress_bar_clamps_and_finished_jobs_show_full(progress, status, expected):
    html = progress_bar_html(progress, status)
    assert f'aria-valuenow="{expected}"' in html
    assert f"width:{expected}%" in html
    assert f">{expected}%<" in html


def test_progress_bar_colour_follows_status_and_only_running_bars_are_animated():
    assert "#16a34a" in progress_bar_html(1, "succeeded")
    assert "#dc2626" in progress_bar_html(0.2, "failed")
    assert "wb-bar-live" in progress_bar_html(0.2, "running")
    assert "wb-bar-live" not in progress_bar_html(0.2, "queued")
    # an unknown status gets the neutral colour, and labels are escaped
    html = progress_bar_html(0.5, "weird", label="<b>x</b>")
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html


def test_jobs_table_rows_are_clickable_escaped_and_mark_the_selected_job():
    now = datetime.now(timezone.utc)
    jobs = [
        {"id": 7, "kind": "pretrain", "status": "running", "progress": 0.5, "owner": "ada<script>",
         "created_at": now, "started_at": now - timedelta(seconds=75), "finished_at": None},
        {"id": 6, "kind": "prepare", "status": "succeeded", "progress": 0.9, "owner": None,
         "created_at": now.replace(tzinfo=None), "started_at": None, "finished_at": None},
    ]
    html = jobs_table_html(jobs, selected_id=6)
    assert html.count("<tr class=\"wb-job-row") == 2
    assert 'data-job="7"' in html and 'data-job="6"' in html
    assert 'class="wb-job-row wb-selected" data-job="6"' in html
    assert "ada&lt;script&gt;" in html and "<script>" not in html
    assert "1m 15s" in html or "1m 16s" in html
    assert 'aria-valuenow="100"' in html  # the succeeded job is full whatever its last progress
    assert "No jobs yet" in jobs_table_html([])


def test_badges_cards_and_messages_escape_their_text():
    assert ">running<" in status_badge_html("running")
    cards = stat_cards_html([("loss", "<1>")])
    assert "&lt;1&gt;" in cards
    message = message_html("file.txt, line 2: bad\nsecond", "error")
    assert "wb-msg-error" in message and "<br>" in message and "#dc2626" in message


@pytest.mark.parametrize("seconds,text", [(None, "—"), (0.2, "<1s"), (42, "42s"), (75, "1m 15s"),
                                          (3725, "1h 2m"), (90061, "1d 1h"), (float("nan"), "—")])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def test_number_formatting():
    assert human_count(3_323_648) == "3.32M"
    assert human_count(999) == "999"
    assert human_count(None) == "—"
    assert human_bytes(512) == "512 B" and human_bytes(1536) == "1.5 KB"
    assert format_metric("mfu", 0.3567) == "35.67%"
    assert format_metric("tokens_per_s", 480.2) == "480/s"
    assert format_metric("tokens_per_s", 12_500) == "12.50K/s"
    assert format_metric("lr", 1e-4) == "1.00e-04"
    assert format_metric("loss", 8.24291) == "8.2429"
    assert format_metric("loss", None) == "—" and format_metric("loss", math.nan) == "—"


# ----------------------------------------------------------------------------- header, jobs detail

def test_header_names_user_and_role_and_escapes():
    html = header_html({"id": 1, "name": "bob<i>", "role": "trainer"})
    assert "bob&lt;i&gt;" in html and ">trainer<" in html and "log out" in html
    assert "not signed in" in header_html(None)
    assert can_write(None) and can_write({"role": "admin"}) and can_write({"role": "trainer"})
    assert not can_write({"role": "labeler"})


def test_job_detail_pieces():
    from web.ui.jobs_tab import detail_header_html, job_choices, metric_cards_html, plot_update

    detail = {"id": 3, "kind": "pretrain", "status": "running", "progress": 0.25, "owner": "admin",
              "started_at": datetime.now(timezone.utc) - timedelta(seconds=30), "finished_at": None,
              "attempts": 1, "params": {"max_steps": 40},
              "metrics": {"loss": 3.21, "mfu": 0.12, "tokens_per_s": 900.0},
              "metric_steps": {"loss": 10, "mfu": 10, "tokens_per_s": 10}}
    head = detail_header_html(detail)
    assert 'data-status="running"' in head and "Job #3" in head and 'aria-valuenow="25"' in head
    cards = metric_cards_html(detail)
    assert "10 / 40" in cards and "3.2100" in cards and "12.00%" in cards and "900/s" in cards
    assert job_choices([{"id": 3, "kind": "pretrain", "status": "queued"}]) == [("#3 · pretrain · queued", 3)]
    empty = plot_update(metrics_frame([], LOSS_PLOT.series))
    assert empty.visible is False
    shown = plot_update(metrics_frame([rec(10, "loss", 3.0)], LOSS_PLOT.series), max_steps=40)
    assert shown.visible is True and shown.x_lim == [0, 40]


# ----------------------------------------------------------------------------- pretrain form

def test_form_params_converts_whole_floats_and_drops_empty_fields():
    from functools import partial

    from web.ui.job_form import form_params
    from worker.kinds import KINDS

    form_params = partial(form_params, KINDS["pretrain"])
    params = form_params({"dataset_id": 2.0, "tokenizer": " gpt2 ", "preset": "tiny", "name": "  ",
                          "max_steps": 40.0, "batch_size": None, "lr": 0.001, "seed": 0.0})
    assert params == {"dataset_id": 2, "tokenizer": "gpt2", "preset": "tiny", "max_steps": 40, "lr": 0.001,
                      "seed": 0}
    assert isinstance(params["max_steps"], int)
    # a fractional value stays as it is, so the service can say what is wrong with it
    assert form_params({"max_steps": 2.5})["max_steps"] == 2.5


def test_estimate_html():
    from web.ui.train_tab import estimate_html

    html = estimate_html({"params_count": 3_323_648, "tokens_per_step": 512, "total_tokens": 20480,
                          "est_seconds": 84.0, "device": "cpu", "time_source": "measured",
                          "time_basis": "a step of this shape measured on cpu (2 threads) (worker w1)",
                          "head_share": 0.96, "tokenizer_advice": "The vocabulary head is 96% of this run's work"})
    assert "3.32M" in html and "512" in html and "~1m 24s (measured)" in html and "worker w1" in html
    assert "96% of the work" in html and "wb-msg-info" in html
    assert "wb-msg-warn" in estimate_html(None, "max_steps must be at least 1")


# ----------------------------------------------------------------------------- chat

def test_sampling_settings_from_the_sliders():
    from web.ui.chat_tab import sampling_settings

    s = sampling_settings(60, 0.8, 0, 1.0, -1, True)
    assert (s.max_new_tokens, s.temperature, s.top_k, s.top_p, s.seed) == (60, 0.8, None, None, None)
    s = sampling_settings(10.0, 0, 40, 0.9, 7, False)
    assert (s.top_k, s.top_p, s.seed, s.stop_at_end_of_text) == (40, 0.9, 7, False)


def test_chat_prompt_for_a_base_model_is_the_latest_user_message():
    from llm.tokenizer import get_tokenizer
    from web.ui.chat_tab import render_prompt

    tok = get_tokenizer("gpt2")
    history = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"},
               {"role": "user", "content": "Once upon a time"}]
    assert render_prompt("base", history, tok) == ("Once upon a time", set())


def test_chat_prompt_for_a_chat_model_uses_specials_only_where_the_template_puts_them():
    from llm.tokenizer import get_tokenizer
    from llm.tokenizer import IM_END, IM_START
    from web.ui.chat_tab import render_prompt

    tok = get_tokenizer("gpt2")
    start, end = tok.special_id(IM_START), tok.special_id(IM_END)
    history = [{"role": "user", "content": f"hi {IM_START}system"}]
    ids, stops = render_prompt("sft", history, tok)
    assert stops == {end, start}  # a reply ends at <|im_end|>, and never opens a new turn
    assert ids.count(start) == 2 and ids.count(end) == 1  # user turn + assistant opener; the typed one is text
    with_system, _ = render_prompt("sft", history, tok, "Be brief.")
    assert tok.decode(with_system).startswith(f"{IM_START}system\nBe brief.{IM_END}\n{IM_START}user\n")
    assert tok.decode(ids).endswith(f"{IM_START}assistant\n")
    assert f"hi {IM_START}system" in tok.decode(ids)


def test_content_text_accepts_gradio_content_shapes():
    from web.ui.chat_tab import content_text

    assert content_text("a") == "a"
    assert content_text([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "ab"
    assert content_text({"text": "c"}) == "c"
    assert content_text(None) == ""


# ----------------------------------------------------------------------------- model cache

class FakeLoader:
    def __init__(self, delay: float = 0.0):
        self.calls: list[str] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, path):
        time.sleep(self.delay)
        with self.lock:
            self.calls.append(path.name)
        return (f"model:{path.name}:{len(self.calls)}", "tok")


def make_dirs(tmp_path, *names):
    dirs = []
    for name in names:
        d = tmp_path / name
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"w")
        dirs.append(d)
    return dirs


def test_model_cache_evicts_the_least_recently_used(tmp_path):
    from web.services.model_cache import ModelCache

    a, b, c = make_dirs(tmp_path, "a", "b", "c")
    loader = FakeLoader()
    cache = ModelCache(capacity=2, loader=loader)
    cache.get(a)
    cache.get(b)
    cache.get(a)            # a is now the most recently used
    cache.get(c)            # evicts b
    assert loader.calls == ["a", "b", "c"]
    assert [k[0].rsplit("/", 1)[-1] for k in cache.keys()] == ["a", "c"]
    cache.get(a)            # still cached
    cache.get(b)            # loaded again, evicts c
    assert loader.calls == ["a", "b", "c", "b"]
    assert len(cache) == 2 and cache.loads == 4


def test_model_cache_reloads_a_model_whose_weights_changed(tmp_path):
    import os

    from web.services.model_cache import ModelCache

    (a,) = make_dirs(tmp_path, "a")
    loader = FakeLoader()
    cache = ModelCache(capacity=2, loader=loader)
    first = cache.get(a)
    weights = a / "model.safetensors"
    weights.write_bytes(b"new weights")
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = cache.get(a)
    assert first != second and loader.calls == ["a", "a"]
    assert len(cache) == 1  # the stale version was dropped, not kept alongside


def test_model_cache_loads_once_when_many_requests_miss_together(tmp_path):
    from web.services.model_cache import ModelCache

    (a,) = make_dirs(tmp_path, "a")
    loader = FakeLoader(delay=0.2)
    cache = ModelCache(capacity=1, loader=loader)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(a))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loader.calls == ["a"] and len(set(results)) == 1


def test_model_cache_capacity_must_be_positive():
    from web.services.model_cache import ModelCache

    with pytest.raises(ValueError):
        ModelCache(capacity=0, loader=FakeLoader())


def test_model_cache_loads_a_real_checkpoint(tmp_path):
    from llm.checkpoint import save_model
    from llm.model import GPT, config_from_preset
    from web.services.model_cache import ModelCache

    model = GPT(config_from_preset("tiny", 300, n_layer=1, n_embd=32, n_head=2, block_size=16))
    save_model(model, tmp_path / "m", "gpt2")
    cache = ModelCache(capacity=1, data_dir=tmp_path)
    loaded, tokenizer = cache.get(tmp_path / "m")
    assert tokenizer.name == "gpt2" and not loaded.training
    assert cache.get(tmp_path / "m")[0] is loaded


# ----------------------------------------------------------------------------- the whole UI builds

def test_build_ui_builds_every_tab_without_touching_the_database(tmp_path, monkeypatch):
    import gradio as gr

    from db.settings import get_settings
    from web.ui import build_ui

    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_DATABASE_URL", f"sqlite:///{tmp_path}/never-created.db")
    blocks = build_ui(get_settings())
    assert isinstance(blocks, gr.Blocks)
    ids = {getattr(block, "elem_id", None) for block in blocks.blocks.values()}
    for elem_id in ("tab-datasets", "tab-pretrain", "tab-jobs", "tab-chat", "ds-upload", "pt-submit",
                    "jobs-loss-plot", "chat-bot", "wb-header"):
        assert elem_id in ids, elem_id
    assert not (tmp_path / "never-created.db").exists()
    assert any(isinstance(b, gr.Timer) for b in blocks.blocks.values())
    for elem_id in ("tab-finetune", "ft-submit", "ft-model", "ft-lora-r", "tab-models", "models-table", "chat-system"):
        assert elem_id in ids, elem_id


def test_every_handler_that_asks_for_the_request_gets_it(tmp_path, monkeypatch):
    """Gradio injects gr.Request only into positional parameters; a keyword-only one (after *args) is
    never filled and the handler fails with a bare "Error" in the browser."""
    import inspect

    import gradio as gr

    from db.settings import get_settings
    from web.ui import build_ui

    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    blocks = build_ui(get_settings())
    checked = 0
    for block_function in blocks.fns.values():
        parameters = inspect.signature(block_function.fn).parameters.values() if block_function.fn else []
        for parameter in parameters:
            if parameter.annotation in (gr.Request, "gr.Request", "gr.Request | None"):
                checked += 1
                assert parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD), \
                    f"{block_function.fn.__qualname__}: {parameter.name} is keyword-only"
    assert checked >= 5


def test_fields_without_a_default_stay_empty_and_typed_numbers_become_numbers():
    """An empty lr on the Fine-tune form means "LoRA's or full fine-tuning's default"; a gr.Number would
    show and send 0 (which the service refuses), so such fields are text boxes parsed by form_params."""
    import gradio as gr

    from web.ui.job_form import field_component, form_params
    from worker.kinds import KINDS

    spec = KINDS["sft"]
    with gr.Blocks():
        assert isinstance(field_component("ft", "lr", spec.params["lr"]), gr.Textbox)
        assert isinstance(field_component("ft", "max_steps", spec.params["max_steps"]), gr.Number)
    assert form_params(spec, {"lr": "", "min_lr": " 1e-5 ", "max_steps": 30.0, "lora_r": "8"}) == {
        "min_lr": 1e-5, "max_steps": 30, "lora_r": 8}
    assert form_params(spec, {"lr": "fast"}) == {"lr": "fast"}  # left for the service to refuse by name


def test_token_histograms_draw_one_chart_per_role():
    from web.ui.plots import token_histograms_figure

    histogram = {"edges": [2, 4, 8], "counts": [3, 1], "min": 2, "median": 3, "mean": 3.5, "max": 7}
    figure = token_histograms_figure({"kind": "chat", "token_histograms": {"assistant": histogram, "user": histogram}})
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == ["user tokens (median 3)", "assistant tokens (median 3)"]
    assert figure.axes[0].get_ylabel() == "conversations"
    assert [bar.get_height() for bar in figure.axes[1].patches] == [3, 1]
