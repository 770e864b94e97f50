"""The Label tab end to end: `workbench serve` in a subprocess (tests/e2e/test_ui_e2e.py's server), headless Chromium.

A finished generate job (2 prompts × 3 answers) is put in the server's database; the admin adds one labeler in
the Admin tab (the other is made with db.users), creates a project with overlap 2 in Label ▸ Projects &
agreement; the two labelers, each in their own browser context, label every pair with the keyboard only
(1/2/4, S then U to take a skip back, a note typed without the "1" in it labeling anything, Esc to leave it);
the admin then sees the agreement with the same alpha as `agreement_report`, and the TRL JSONL downloaded from
the page holds exactly the pairs both labelers preferred.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.support.browser import choose, log_in, open_tab, text_of

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ANSWER = re.compile(r"answer (\d+)\.(\d+)")
PAIRS = 6  # 2 prompts, every two of 3 answers each: enough pairs in common for Cohen's kappa


def database(server):
    from db.session import SessionLocal

    return SessionLocal(f"sqlite:///{server.data_dir / 'workbench.db'}")


def log_in_as(page, url: str, name: str, password: str) -> None:
    page.goto(url)
    page.get_by_label("username").fill(name)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    page.locator("#wb-whoami").filter(has_text=name).wait_for(timeout=60_000)


def wait_done(page, done: int) -> None:
    page.locator(f'#label-progress-bar[data-done="{done}"]').wait_for()


def answers_shown(page) -> tuple[int, int, int]:
    """(prompt, left answer, right answer) of the pair on screen, from the answers' texts "answer p.a"."""
    (prompt, left), (_, right) = [tuple(map(int, ANSWER.search(text_of(page, f"#label-{side}")).groups()))
                                  for side in ("left", "right")]
    return prompt, left, right


def label_all_with_keys(labelers: dict) -> dict[str, list[tuple[int, int, int, str]]]:
    """Every labeler ({name: (page, decide)}) labels every pair with key presses, side by side: each presses
    the key `decide(prompt, left, right)` gives, then all wait for their next pair.
    Returns {name: [(prompt, left answer, right answer, key), ...]}."""
    given: dict[str, list] = {name: [] for name in labelers}
    for page, _ in labelers.values():
        page.locator("#label-a:not([disabled])").wait_for()
    for done in range(PAIRS):
        for name, (page, decide) in labelers.items():
            wait_done(page, done)
            shown = answers_shown(page)
            key = decide(*shown)
            page.keyboard.press(key)
            given[name].append((*shown, key))
    for page, _ in labelers.values():
        wait_done(page, PAIRS)
        page.locator("#label-status").filter(has_text="Nothing left for you").wait_for()
        assert page.locator("#label-a").is_disabled()
    return given


def test_two_labelers_label_with_the_keyboard_and_the_admin_sees_agreement(server, browser, tmp_path):
    from db.models import Comparison, Completion, LabelingProject, Role
    from db.users import create_user
    from tests.support.records import make_generate_job
    from web.services.labeling_results import agreement_report

    t0 = time.monotonic()
    with database(server) as session:
        job_id = make_generate_job(session, prompts=2, answers=3).id
        create_user(session, "lara", "lara-password-1", Role.labeler)
        session.commit()
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
                for _ in range(3)]
    admin, lena, lara = (context.new_page() for context in contexts)
    for page in (admin, lena, lara):
        page.set_default_timeout(30_000)
    try:
        # --- the admin adds a labeler and creates a project with overlap 2
        log_in(admin, server.url, server.password)
        open_tab(admin, "Admin")
        admin.locator("#admin-new-name input, #admin-new-name textarea").first.fill("lena")
        admin.locator("#admin-new-password input").first.fill("lena-password-1")
        admin.locator("#admin-add").click()
        admin.locator("#admin-message").filter(has_text="Added lena (labeler)").wait_for()

        open_tab(admin, "Label")
        admin.get_by_role("tab", name="Projects & agreement").click()
        admin.get_by_text("New project", exact=True).click()
        admin.locator("#labeling-name input, #labeling-name textarea").first.fill("which answer helps?")
        choose(admin, "labeling-jobs", f"#{job_id} ", exact=False)
        overlap = admin.locator("#labeling-overlap input[type=number]").first
        overlap.fill("2")
        overlap.press("Tab")
        admin.locator("#labeling-new-guidelines textarea").fill("Prefer the answer with the **higher** number.")
        admin.locator("#labeling-create").click()
        admin.locator("#labeling-message").filter(has_text=f"{PAIRS} pairs, 2 label(s) each").wait_for()
        timings = {"project created": time.monotonic() - t0}

        # --- two labelers, keyboard only: lena prefers the higher answer; lara too, except that she calls
        # the first prompt's answers both bad, and skips her first pair then takes the skip back (S, U).
        log_in_as(lena, server.url, "lena", "lena-password-1")
        log_in_as(lara, server.url, "lara", "lara-password-1")
        for page in (lena, lara):
            open_tab(page, "Label")
            page.locator("#label-guidelines").filter(has_text="Prefer the answer with the").wait_for()

        def prefers_higher(prompt, left, right):
            return "1" if left > right else "2"

        lara.locator("#label-a:not([disabled])").wait_for()
        lara.keyboard.press("s")
        wait_done(lara, 1)
        lara.keyboard.press("u")
        wait_done(lara, 0)
        lara.locator("#label-status").filter(has_text="here is that pair again").wait_for()
        # Typing in the note labels nothing ("1" is text there); Esc leaves the note, then "1" labels.
        noted_pair = answers_shown(lara)
        lara.locator("#label-note textarea").type("1 is fine")
        lara.keyboard.press("Escape")

        given = label_all_with_keys({"lena": (lena, prefers_higher), "lara": (lara, lambda prompt, left, right:
                                     "4" if prompt == 0 else prefers_higher(prompt, left, right))})
        timings["labeled"] = time.monotonic() - t0
        with database(server) as session:
            assert session.query(Comparison).count() == 2 * PAIRS
            # The note went with the pair on screen while it was typed: its "1" labeled nothing.
            noted = session.query(Comparison).filter(Comparison.note == "1 is fine").one()
            texts = {session.get(Completion, i).text for i in (noted.completion_a_id, noted.completion_b_id)}
            prompt, left, right = noted_pair
            assert texts == {f"answer {prompt}.{left}", f"answer {prompt}.{right}"}

        # --- the admin's agreement is the service's, and the export holds the pairs both preferred
        admin.locator("#labeling-refresh").click()
        numbers = admin.locator("#labeling-agreement-numbers")
        admin.locator(f'#labeling-agreement-numbers[data-labels="{2 * PAIRS}"]').wait_for()
        with database(server) as session:
            project_id = session.query(LabelingProject.id).scalar()
            report = agreement_report(project_id, "admin", session=session)
        assert float(numbers.get_attribute("data-alpha")) == pytest.approx(report["alpha"], abs=1e-9)
        assert report["alpha_reading"][:20] in text_of(admin, "#labeling-agreement")
        assert "lena" in text_of(admin, "#labeling-kappas") and "lara" in text_of(admin, "#labeling-majority")

        admin.locator("#labeling-export-trl").click()
        admin.locator("#labeling-message").filter(has_text="consensus pairs in").wait_for()
        with admin.expect_download() as download_info:
            admin.locator("#labeling-file a").first.click()
        exported = [json.loads(line) for line in
                    open(download_info.value.path(), encoding="utf-8").read().splitlines()]

        def preferred(given):
            """{(prompt, chosen answer, rejected answer)} of the pairs where a side was preferred."""
            sides = {"1": lambda left, right: (left, right), "2": lambda left, right: (right, left)}
            return {(prompt, *sides[key](left, right)) for prompt, left, right, key in given if key in sides}

        agreed = preferred(given["lena"]) & preferred(given["lara"])
        got = {(int(ANSWER.search(r["chosen"][0]["content"]).group(1)),
                int(ANSWER.search(r["chosen"][0]["content"]).group(2)),
                int(ANSWER.search(r["rejected"][0]["content"]).group(2))) for r in exported}
        assert got == agreed and len(exported) == 3  # prompt 1's pairs; prompt 0's have no majority
        assert all(r["prompt"][0]["role"] == "user" for r in exported)
        timings["total"] = time.monotonic() - t0
        print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
    except Exception:
        for name, page in (("admin", admin), ("lena", lena), ("lara", lara)):
            page.screenshot(path=str(tmp_path / f"label-{name}.png"), full_page=True)
        print(server.log()[-3000:])
        raise
    finally:
        for context in contexts:
            context.close()
