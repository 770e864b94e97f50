"""The whole loop in a browser, as one person would run it: upload → pretrain a tiny model → SFT → generate
candidate answers → label them → a reward model and DPO from those labels → a blind arena vote between the
SFT and the DPO model → the leaderboard lists both, and the Models tab shows the DPO model's lineage back to
the labels that made it.

`workbench serve` in a subprocess (tests/e2e/test_ui_e2e.py's server), headless Chromium. Runs are tiny (a few
steps each): this tests that the pieces connect through the UI; learning is tested in test_reward.py,
test_dpo.py and test_sft.py.
"""

from __future__ import annotations

import time

import pytest

from tests.support.browser import (choose, fill_number, log_in, make_corpus, open_tab, pick, submit_and_wait,
                                   text_of, upload_dataset, write_chat_data)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PROMPTS = ["Where is the old miller?", "Where is the baker?", "Where is the little dog?"]


def small_run(page, prefix: str, steps: int, name: str | None = None) -> None:
    fill_number(page, f"{prefix}-max-steps", steps)
    fill_number(page, f"{prefix}-batch-size", 4)
    fill_number(page, f"{prefix}-block-size", 64)
    if name:
        page.locator(f"#{prefix}-name input, #{prefix}-name textarea").first.fill(name)


# 5-9 minutes on a loaded 2-core machine (520 s in one full run): the default 600 s limit would end a slow run, not
# a hung one.
@pytest.mark.timeout(1200)
def test_the_whole_loop(server, browser, tmp_path):
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    context = browser.new_context(viewport={"width": 1440, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        log_in(page, server.url, server.password)
        corpus, chats, prompts = tmp_path / "loop.txt", tmp_path / "loop_chats.jsonl", tmp_path / "loop_prompts.txt"
        make_corpus(corpus)
        write_chat_data(chats)
        prompts.write_text("\n".join(PROMPTS) + "\n")
        upload_dataset(page, corpus, "loop corpus", "text")
        upload_dataset(page, chats, "loop chats", "chat")
        upload_dataset(page, prompts, "loop prompts", "prompts")

        # --- pretrain, then fine-tune on the chats
        open_tab(page, "Train")
        open_tab(page, "Pretrain")
        pick(page, "pt-dataset", "loop corpus")
        small_run(page, "pt", 20, "loop-base")
        submit_and_wait(page, server, "pt")
        open_tab(page, "Train")
        open_tab(page, "Fine-tune")
        pick(page, "ft-model", "loop-base")
        pick(page, "ft-dataset", "loop chats")
        small_run(page, "ft", 20, "loop-sft")
        submit_and_wait(page, server, "ft")
        timings["base and sft"] = time.monotonic() - t0

        # --- two candidate answers per prompt from the SFT model
        open_tab(page, "Train")
        open_tab(page, "Candidates")
        pick(page, "gen-dataset", "loop prompts")
        pick(page, "gen-model", "loop-sft")
        fill_number(page, "gen-max-new-tokens", 8)
        generate_job = submit_and_wait(page, server, "gen")
        timings["candidates"] = time.monotonic() - t0

        # --- a labeling project over them, labeled with the keyboard ("1": the left answer is better)
        open_tab(page, "Label")
        page.get_by_role("tab", name="Projects & agreement").click()
        page.get_by_text("New project", exact=True).click()
        page.locator("#labeling-name input, #labeling-name textarea").first.fill("loop labels")
        choose(page, "labeling-jobs", f"#{generate_job} ", exact=False)
        overlap = page.locator("#labeling-overlap input[type=number]").first
        overlap.fill("1")  # one person labels here: each pair needs one label
        overlap.press("Tab")
        page.locator("#labeling-create").click()
        page.locator("#labeling-message").filter(has_text=f"{len(PROMPTS)} pairs, 1 label(s) each").wait_for()
        page.get_by_role("tab", name="Label", exact=True).last.click()
        pick(page, "label-project", "loop labels")
        for done in range(len(PROMPTS)):
            page.locator(f'#label-progress-bar[data-done="{done}"]').wait_for()
            page.locator("#label-a:not([disabled])").wait_for()
            page.keyboard.press("1")
        page.locator("#label-status").filter(has_text="Nothing left for you").wait_for()
        timings["labels"] = time.monotonic() - t0

        # --- a reward model and DPO from the SFT model on those labels
        for prefix, tab, name in (("rm", "Reward model", "loop-rm"), ("dpo", "DPO", "loop-dpo")):
            open_tab(page, "Train")
            open_tab(page, tab)
            pick(page, f"{prefix}-model", "loop-sft")
            page.locator(f"#{prefix}-projects label").filter(has_text="loop labels").click()
            page.locator(f"#{prefix}-estimate").filter(has_text=f"{len(PROMPTS)} pairs").wait_for()
            small_run(page, prefix, 4, name)
            fill_number(page, f"{prefix}-batch-size", 2)
            submit_and_wait(page, server, prefix)
        timings["reward and dpo"] = time.monotonic() - t0

        # --- the arena: the only two chat models are the SFT and the DPO model
        open_tab(page, "Arena")
        page.locator("#arena-input textarea, #arena-input input").first.fill("Where is the old miller?")
        page.locator("#arena-battle").click()
        page.locator("#arena-vote-left:not([disabled])").wait_for(timeout=120_000)
        page.locator("#arena-vote-left").click()
        page.locator("#arena-status").filter(has_text="Model A was").wait_for()
        revealed = text_of(page, "#arena-status")
        assert "loop-sft" in revealed and "loop-dpo" in revealed, revealed
        board = text_of(page, "#arena-leaderboard")
        assert "loop-sft" in board and "loop-dpo" in board, board
        timings["arena"] = time.monotonic() - t0

        # --- the DPO model's lineage goes back to the labels, the SFT model and the data
        open_tab(page, "Models")
        pick(page, "models-picker", "loop-dpo")
        page.locator("#models-card").filter(has_text="DPO held-out preference accuracy").wait_for()
        assert "arena rating" in text_of(page, "#models-card").lower()  # card labels are shown in capitals
        page.locator("#models-lineage-text summary").click()
        lineage = text_of(page, "#models-lineage-text")
        assert "labels: loop labels →" in lineage and "loop-sft (sft) →" in lineage, lineage
        assert "loop chats (chat) →" in lineage and "loop-base (base) →" in lineage, lineage
        timings["total"] = time.monotonic() - t0
        print("whole loop timings (s):", {key: round(value, 1) for key, value in timings.items()})
    except Exception:
        page.screenshot(path=str(tmp_path / "loop-failure.png"), full_page=True)
        print(f"failure screenshot: {tmp_path / 'loop-failure.png'}")
        print(server.log()[-3000:])
        raise
    finally:
        context.close()
