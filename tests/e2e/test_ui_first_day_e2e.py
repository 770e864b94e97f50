"""A new team's first day, in a browser (issue 19, items 13 to 19): what only a browser shows.

`workbench serve` in a subprocess (tests/e2e/test_ui_e2e.py's server), headless Chromium. The rows a team would have
after a few runs are put in the server's database directly (jobs with their curves, models, generated answers, a
labeling project, arena votes), so each test looks at one screen without training anything.
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect

from tests.support.browser import choose, fill_number, log_in, open_tab

pytestmark = [pytest.mark.slow, pytest.mark.browser]

LONG_RUN_STEPS = 3000
LABELER, LABELER_PASSWORD = "lea", "lea-password-1"
MARKDOWN_ANSWER = "*stars* stay stars, 2 * 3 = 6\n# no heading"
LONG_TAIL = " and a much longer answer" * 12  # one answer of each prompt is longer than the others

# A chart has drawn a series when its SVG holds a line with a path, or a point of visible size (vega keeps
# zero-size points for the hover layer).
DRAWN_MARKS = """(selector) => {
  const root = document.querySelector(selector);
  if (!root || root.offsetParent === null) return {lines: 0, points: 0};
  const paths = [...root.querySelectorAll('svg path')];
  const lines = paths.filter(p => p.getAttribute('aria-roledescription') === 'line mark'
                                  && (p.getAttribute('d') || '').length > 20).length;
  const points = paths.filter(p => p.getAttribute('aria-roledescription') === 'point'
                                   && p.getBoundingClientRect().width >= 3
                                   && parseFloat(p.getAttribute('opacity') || '1') > 0).length;
  return {lines, points};
}"""


def database(server):
    from db.session import SessionLocal

    return SessionLocal(f"sqlite:///{server.data_dir / 'workbench.db'}")


@pytest.fixture(scope="module")
def team(server):
    """The rows of a team's first day: ids by name."""
    from db.models import (Completion, Dataset, DatasetKind, Job, JobStatus, Metric, Model, ModelKind, Prompt, Role,
                           User)
    from db.users import create_user
    from tests.support.records import add_chat_model
    from web.services import delete_dataset, labeling
    from worker.jobs.lifecycle import record_event

    ids = {}
    with database(server) as session:
        admin = session.query(User).filter_by(name="admin").one()
        ids["labeler"] = create_user(session, LABELER, LABELER_PASSWORD, Role.labeler).id
        session.commit()

        def finished_job(kind: str, params: dict, curves: dict[str, list[tuple[int, float]]]) -> int:
            job = Job(kind=kind, status=JobStatus.succeeded, params=params, owner_id=admin.id, progress=1.0,
                      attempts=1)
            session.add(job)
            session.flush()
            job.run_dir = f"runs/{job.id}"
            record_event(session, job.id, "submitted", admin.id)
            session.add_all(Metric(job_id=job.id, step=step, name=name, value=value)
                            for name, points in curves.items() for step, value in points)
            session.commit()
            return job.id

        # The first minute of a run: a few loss points and the first evaluation (one point).
        ids["first_eval"] = finished_job("pretrain", {"max_steps": 100}, {
            "loss": [(step, 4.0 - step / 20) for step in range(1, 21)], "val_loss": [(20, 3.2)],
            "val_bpb": [(20, 1.9)]})
        # Two fine-tunes named in the Train form (the name is their model's; job.name stays empty).
        for name, rate in (("sft-lr-1e-4", 1.0), ("sft-lr-3e-4", 2.0)):
            ids[name] = finished_job("sft", {"max_steps": 40, "name": name}, {
                "loss": [(step, 3.0 * math.exp(-rate * step / 40)) for step in range(1, 41)]})
        # Answers a model wrote with Markdown's characters in them, to label (2 prompts x 3 answers: 6 pairs).
        writers = [Model(name=name, kind=ModelKind.sft, tokenizer="gpt2", config={}, path=f"models/{name}",
                         in_arena=False) for name in ("sft-small", "sft-large")]  # rows without weights: no battles
        generate = Job(kind="generate", status=JobStatus.succeeded, params={"name": "first candidates"},
                       owner_id=admin.id, progress=1.0, attempts=1)
        session.add_all([*writers, generate])
        session.flush()
        for p in range(2):
            question = f"Is *this* 2*3? ({p})"
            prompt = Prompt(text=question, messages=[{"role": "user", "content": question}])
            session.add(prompt)
            session.flush()
            session.add_all(Completion(prompt_id=prompt.id, job_id=generate.id, model_id=writers[a % 2].id,
                                       sampling={"temperature": 0.7, "max_new_tokens": 64}, seed=a,
                                       text=f"{MARKDOWN_ANSWER} {p}.{a}" + LONG_TAIL * (a == 2)) for a in range(3))
        session.commit()
        ids["generate"] = generate.id
        ids["project"] = labeling.create_project(session, admin, name="first project", source_job_ids=[generate.id],
                                                 overlap=1).id
        session.commit()

        # The first run made a base model, the first fine-tune a chat model from chats that were deleted since.
        chats = Dataset(name="team-chats", kind=DatasetKind.chat, format="jsonl", path="datasets/chats",
                        original_filename="chats.jsonl", size_bytes=1, stats={}, owner_id=admin.id)
        session.add(chats)
        session.flush()
        fine_tune = session.get(Job, ids["sft-lr-1e-4"])
        fine_tune.dataset_id, fine_tune.params = chats.id, {**fine_tune.params, "dataset_id": chats.id}
        base = Model(name="team-base", kind=ModelKind.base, tokenizer="gpt2", config={}, path="models/team-base",
                     job_id=ids["first_eval"], owner_id=admin.id)
        session.add(base)
        session.flush()
        session.add(Model(name="team-chat", kind=ModelKind.sft, tokenizer="gpt2", config={}, path="models/team-chat",
                          job_id=fine_tune.id, parent_model_id=base.id, owner_id=admin.id, in_arena=False))
        session.commit()
        delete_dataset(session, SimpleNamespace(data_dir=server.data_dir), chats.id, admin)  # all it reads

        # Two tiny chat models for the arena (random weights: what they say does not matter here).
        for seed, name in enumerate(("arena-left", "arena-right")):
            add_chat_model(session, SimpleNamespace(data_dir=server.data_dir), name, seed)
        # A long run, the newest job: every step's loss, speed and learning rate (it made the first open of Jobs
        # slow).
        ids["long_run"] = finished_job("pretrain", {"max_steps": LONG_RUN_STEPS}, {
            "loss": [(step, 4 * math.exp(-step / 800) + 0.5) for step in range(1, LONG_RUN_STEPS + 1)],
            "tokens_per_s": [(step, 50_000.0) for step in range(1, LONG_RUN_STEPS + 1)],
            "lr": [(step, 3e-4) for step in range(1, LONG_RUN_STEPS + 1)],
            "val_loss": [(step, 4 * math.exp(-step / 800) + 0.6) for step in range(100, LONG_RUN_STEPS + 1, 100)],
            "val_bpb": [(step, 1.5 * math.exp(-step / 800) + 0.7) for step in range(100, LONG_RUN_STEPS + 1, 100)]})
    return ids


def show_job(page, job_id: int) -> None:
    page.locator(f"#jobs-queue tr[data-job='{job_id}']").click()
    page.locator("#jobs-detail-header .wb-job-head").filter(has_text=f"Job #{job_id}").wait_for()


def test_charts_draw_a_single_point_open_fast_and_are_drawn_again_on_reload(server, browser, team):
    """Item 14: a series of one point is a visible marker; the first open of Jobs with a long run in the queue and
    a reload on Jobs draw their charts from the database without waiting for the timer."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    log_in(page, server.url, server.password)

    started = time.monotonic()
    open_tab(page, "Jobs")  # the newest job (the long run) is shown first
    page.locator("#jobs-detail-header .wb-job-head").filter(has_text=f"Job #{team['long_run']}").wait_for()
    page.wait_for_function(f"() => ({DRAWN_MARKS})('#jobs-loss-plot').lines >= 2")
    first_open_s = time.monotonic() - started
    print(f"first open of Jobs with a {LONG_RUN_STEPS}-step run: charts drawn after {first_open_s:.2f} s")

    show_job(page, team["first_eval"])
    # val bits/byte: its one evaluation; the loss chart: 20 train-loss points and the one val-loss point.
    page.wait_for_function(f"""() => ({DRAWN_MARKS})('#jobs-second-plot').points === 1
                                     && ({DRAWN_MARKS})('#jobs-loss-plot').points === 21""")
    page.screenshot(path=str(server.data_dir.parent / "one-point.png"), full_page=True)

    page.wait_for_timeout(2_500)  # the selection is stored in the browser
    page.reload()
    reloaded = time.monotonic()
    # The job looked at before the reload, drawn from the load event (the timer was not waited for).
    page.locator("#jobs-detail-header .wb-job-head").filter(has_text=f"Job #{team['first_eval']}").wait_for()
    page.wait_for_function(f"() => ({DRAWN_MARKS})('#jobs-second-plot').points >= 1")
    print(f"reload on Jobs: charts drawn after {time.monotonic() - reloaded:.2f} s")
    context.close()


def curves_of(page, selector: str) -> tuple[set[str], list[str]]:
    """(the stroke colours of the lines a chart draws, its legend's labels)."""
    return tuple(page.evaluate("""(selector) => {
      const root = document.querySelector(selector);
      const strokes = [...root.querySelectorAll('svg path[aria-roledescription="line mark"]')]
        .filter(p => (p.getAttribute('d') || '').length > 20).map(p => p.getAttribute('stroke'));
      const legend = [...root.querySelectorAll('svg .role-legend-label text')].map(t => t.textContent);
      return [[...new Set(strokes)], legend];
    }""", selector))


def test_named_runs_show_their_names_and_compare_on_one_chart(server, browser, team):
    """Item 18: the queue names the runs their forms named ("sft, sft" before); two runs chosen in "Compare runs"
    are two curves of two colours on one chart, with both in the legend."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    log_in(page, server.url, server.password)
    open_tab(page, "Jobs")
    first, second = team["sft-lr-1e-4"], team["sft-lr-3e-4"]
    for job_id, name in ((first, "sft-lr-1e-4"), (second, "sft-lr-3e-4")):
        page.locator(f"#jobs-queue tr[data-job='{job_id}'] .wb-job-name").filter(has_text=name).wait_for()
    show_job(page, first)
    expect(page.locator("#jobs-name input, #jobs-name textarea").first).to_have_value("sft-lr-1e-4")

    page.locator("#jobs-compare-panel").get_by_text("Compare runs").click()
    for job_id, name in ((first, "sft-lr-1e-4"), (second, "sft-lr-3e-4")):
        page.locator("#jobs-compare-runs input").first.click()
        page.get_by_role("option", name=f"#{job_id} · {name} · succeeded").click()
    page.keyboard.press("Escape")
    page.wait_for_function("""() => document.querySelectorAll(
        '#jobs-compare-plot svg .role-legend-label text').length === 2""")
    page.wait_for_function("""() => new Set([...document.querySelectorAll(
        '#jobs-compare-plot svg path[aria-roledescription="line mark"]')]
        .map(p => p.getAttribute('stroke'))).size === 2""")
    strokes, legend = curves_of(page, "#jobs-compare-plot")
    assert len(strokes) == 2 and sorted(legend) == sorted([f"#{first} sft-lr-1e-4", f"#{second} sft-lr-3e-4"])
    page.locator("#jobs-compare-panel").screenshot(path=str(server.data_dir.parent / "compare.png"))
    context.close()


def log_in_as(page, url: str, name: str, password: str) -> None:
    page.goto(url)
    page.get_by_label("username").fill(name)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    page.locator("#wb-whoami").filter(has_text=name).wait_for(timeout=60_000)


def open_project(page) -> None:
    open_tab(page, "Label")
    page.locator("#label-project input").first.click()
    page.get_by_role("option").filter(has_text="first project").first.click()
    page.locator("#label-a:not([disabled])").wait_for()


def test_the_label_screen_counts_skips_apart_shows_text_as_text_and_fits_a_phone(server, browser, team):
    """Item 16: a skip is not "done"; a model's `*` stays a `*`; answers A and B line up whatever their lengths;
    at 390 px the progress counts are whole on screen."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    log_in_as(page, server.url, LABELER, LABELER_PASSWORD)
    open_project(page)
    for side in ("left", "right"):
        text = page.locator(f"#label-{side} .wb-answer-text").inner_text()
        assert text.startswith("*stars* stay stars, 2 * 3 = 6\n# no heading"), text
        assert page.locator(f"#label-{side} em, #label-{side} h1").count() == 0
    assert "Is *this* 2*3?" in page.locator("#label-prompt").inner_text()  # the prompt as written too

    page.keyboard.press("s")
    page.locator('#label-progress-bar[data-skipped="1"]').wait_for()
    page.keyboard.press("1")
    page.locator('#label-progress-bar[data-labeled="1"]').wait_for()
    assert page.locator("#label-progress .wb-progress-counts").inner_text() == "1 done · 1 skipped · 4 left · 2 today"

    # A pair with the long answer on one side: both boxes start and end at the same height.
    while LONG_TAIL.strip() not in page.locator("#label-answers").inner_text():
        done = int(page.locator("#label-progress-bar").get_attribute("data-done"))
        page.keyboard.press("3")
        page.locator(f'#label-progress-bar[data-done="{done + 1}"]').wait_for()
    left, right = (page.locator(f"#label-{side}").bounding_box() for side in ("left", "right"))
    prompt, first_button = page.locator("#label-prompt").bounding_box(), page.locator("#label-a").bounding_box()
    assert (left["y"], left["height"]) == (right["y"], right["height"])
    assert left["x"] == prompt["x"] == first_button["x"]  # the boxes' edges line up with the blocks around them
    page.screenshot(path=str(server.data_dir.parent / "label-1440.png"), full_page=True)
    context.close()

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = phone.new_page()
    page.set_default_timeout(60_000)
    log_in_as(page, server.url, LABELER, LABELER_PASSWORD)
    open_project(page)
    counts = page.locator("#label-progress .wb-progress-counts")
    box = counts.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    assert counts.evaluate("e => e.scrollWidth <= e.clientWidth && e.scrollHeight <= e.clientHeight")
    assert "done" in counts.inner_text() and "left" in counts.inner_text()
    assert page.locator("#label-progress-bar [role=progressbar]").bounding_box()["width"] >= 300
    page.screenshot(path=str(server.data_dir.parent / "label-390.png"), full_page=True)
    phone.close()


def test_the_training_team_browses_candidates_and_labelers_do_not_see_them(server, browser, team):
    """Item 15: Label ▸ Candidates lists each prompt with its answers, their models and settings; a search keeps
    the prompts that have the words and marks them. Label ▸ Chat thumbs is the training team's too."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    log_in(page, server.url, server.password)
    open_tab(page, "Label")
    page.get_by_role("tab", name="Candidates").click()
    cards = page.locator("#candidates-cards .wb-candidate")
    cards.first.wait_for()
    assert cards.count() == 2 and page.locator("#candidates-page").inner_text().strip() == "prompts 1–2 of 2"
    first = cards.first
    assert first.locator(".wb-candidate-answer").count() == 3
    meta = first.locator(".wb-candidate-answer .wb-candidate-meta").first.inner_text()
    assert "sft-small" in meta and "temperature 0.7" in meta and "up to 64 tokens" in meta
    assert first.locator(".wb-candidate-prompt").inner_text() == "Is *this* 2*3? (1)"

    page.locator("#candidates-search input, #candidates-search textarea").first.fill("(0)")
    page.keyboard.press("Enter")
    page.locator("#candidates-page").filter(has_text="prompts 1–1 of 1").wait_for()
    assert page.locator("#candidates-cards mark").first.inner_text() == "(0)"
    page.screenshot(path=str(server.data_dir.parent / "candidates.png"), full_page=True)
    page.get_by_role("tab", name="Chat thumbs").click()  # the thumbs sub-tab is the training team's too
    page.locator("#thumbs-message").filter(has_text="No thumbs yet").wait_for()
    context.close()

    labeler = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = labeler.new_page()
    log_in_as(page, server.url, LABELER, LABELER_PASSWORD)
    open_tab(page, "Label")
    page.locator("#label-project").wait_for()
    assert page.get_by_role("tab", name="Candidates").count() == 0
    assert page.get_by_role("tab", name="Chat thumbs").count() == 0
    labeler.close()


def test_the_lineage_shows_a_deleted_dataset_and_is_drawn_at_a_readable_size(server, browser, team):
    """Item 17: the Models tab draws the chat model's lineage with the deleted chats marked deleted, the figure shown
    at (nearly) its own size so its 10-point labels stay readable."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    log_in(page, server.url, server.password)
    open_tab(page, "Models")
    page.locator("#models-picker input").first.click()
    page.get_by_role("option").filter(has_text="team-chat").first.click()
    page.locator("#models-lineage-text").filter(has_text="team-chats (deleted)").wait_for()
    figure = page.locator("#models-lineage img").first
    figure.wait_for()
    natural, shown = figure.evaluate("img => [img.naturalWidth, img.getBoundingClientRect().width]")
    assert shown >= 0.75 * natural, (natural, shown)
    page.locator("#models-lineage-panel").screenshot(path=str(server.data_dir.parent / "lineage.png"))
    context.close()


def test_the_arena_labels_its_input_offers_a_next_battle_and_shows_records_and_win_rates(server, browser, team):
    """Item 19: the message box has a label; after a vote "Next battle" clears the screen for the next message;
    under the leaderboard, each model's battles won/tied/lost, the sentence on intervals, the win-rate matrix."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(120_000)
    log_in(page, server.url, server.password)
    open_tab(page, "Arena")
    message = page.get_by_label("Your message to both models")  # was an unlabelled "Textbox"
    message.fill("Name a colour.")
    assert page.locator("#arena-next").is_disabled()
    page.locator("#arena-battle").click()
    page.locator("#arena-status").filter(has_text="Which answer is better?").wait_for()
    page.locator("#arena-vote-left").click()
    page.locator("#arena-status").filter(has_text="Model A was").wait_for()
    page.locator("#arena-next:not([disabled])").wait_for()
    board = page.locator("#arena-leaderboard")
    board.locator(".wb-win-rates").wait_for()
    assert "won · tied · lost" in board.inner_text() and "1 · 0 · 0" in board.inner_text()
    assert "interval is wider" in board.locator(".wb-intervals-why").inner_text()
    assert board.locator(".wb-win-rates td[data-battles='1']").count() == 2  # each against the other, once
    page.screenshot(path=str(server.data_dir.parent / "arena.png"), full_page=True)

    page.locator("#arena-next").click()
    page.locator("#arena-status").filter(has_text="next message").wait_for()
    assert message.input_value() == "" and page.locator("#arena-vote-left").is_disabled()
    assert page.locator("#arena-left .message, #arena-right .message").count() == 0
    page.wait_for_function("() => document.activeElement && document.activeElement.closest('#arena-input')")
    context.close()


def test_a_wrong_number_in_a_train_form_is_said_under_its_field(server, browser):
    """Item 13: a value out of its bounds is said under its field, with the field's label and the bound; no toast,
    the other fields' errors and the last submit's result gone."""
    from db.models import Dataset, DatasetKind

    with database(server) as session:
        session.add(Dataset(name="form-check stories", kind=DatasetKind.text, format="txt", path="datasets/none",
                            original_filename="stories.txt", size_bytes=1, stats={"documents": 1}))
        session.commit()
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(120_000)
    log_in(page, server.url, server.password)
    open_tab(page, "Train")
    page.locator("#pt-estimate-cards").wait_for()
    choose(page, "pt-dataset", "form-check stories", exact=False)
    # A refusal only the server's check makes (the warmup as long as the run) is said under the field it names.
    fill_number(page, "pt-max-steps", 10)
    fill_number(page, "pt-warmup", 20)
    page.locator("#pt-submit").click()
    expect(page.locator("#pt-warmup div.validation-error")).to_contain_text("Warmup: ")
    expect(page.locator("#pt-result .wb-msg")).to_have_count(0)
    fill_number(page, "pt-warmup", 2)

    fill_number(page, "pt-block-size", 4)
    page.locator("#pt-submit").click()
    block_error = page.locator("#pt-block-size div.validation-error")  # (the input gets the class too: red)
    expect(block_error).to_have_text("Block size: must be at least 8, got 4")
    expect(page.locator("#pt-result .wb-msg")).to_have_count(0)

    fill_number(page, "pt-block-size", 64)
    fill_number(page, "pt-lr", 0)
    page.locator("#pt-submit").click()
    expect(page.locator("#pt-lr div.validation-error")).to_have_text("Learning rate: must be greater than 0, got 0.0")
    expect(block_error).to_have_count(0)
    expect(page.locator("#pt-estimate")).to_contain_text("Learning rate: must be greater than 0")
    page.screenshot(path=str(server.data_dir.parent / "form-errors.png"), full_page=True)
    assert page.locator("[data-testid='toast-body']").count() == 0
    context.close()
