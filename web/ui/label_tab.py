"""Label tab: compare two anonymous answers to a prompt and say which is better, one pair after another.

    Label                   choose a project → its guidelines, your progress bar, the prompt as a conversation
                            and answers A and B side by side → "A is better" [1], "B is better" [2], "Tie" [3],
                            "Both bad" [4], "Skip" [S], an optional note, and Undo [U or Backspace]
    Projects & agreement    (admins and trainers only, web/ui/labeling_admin.py) create projects, edit
                            guidelines, watch agreement and the answers labelers disagree on, export
    Candidates              (the training team only, web/ui/candidates_browser.py) every prompt generate jobs
                            answered with its answers, their models and settings; search and filters
    Chat thumbs             (the training team only, web/ui/thumbs_view.py) the 👍 / 👎 given in the Chat tab per
                            model, and their export in TRL's unpaired format

The queue, the overlap and the labels' storage are `web.services.labeling`'s (the REST API calls the same
functions). What the page shows of a pair — its id, which answer is on the left, when it was shown and an
idempotency key — travels in a hidden textbox (`SHOWN`), so a click sends what the labeler saw at that moment:
a double click, or "1" then "2" pressed before the answer arrives, sends the same key twice and stores one
label. Time spent per pair is measured from when the pair was shown to when the label arrives.

Keyboard shortcuts are a `keydown` listener installed by a gr.HTML's `js_on_load` (Gradio 6 takes page-wide
`js=`/`head=` only in launch()/mount_gradio_app, which web/app.py owns). It clicks the buttons by elem_id,
ignores keys typed in the note (Escape leaves the note) or any other field, and does nothing while the
buttons are hidden (another tab open) or disabled (nothing to label).
"""

from __future__ import annotations

import html
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import gradio as gr

from db.models import MAX_TIME_SPENT_S
from llm.preference_labels import Choice
from web.ui import current_user, db_session, error_text
from web.ui.plots import STATUS_COLORS, message_html

# A button per Choice (llm/preference_labels.py), in its order, worded by `Choice.words`; the Arena tab's
# vote buttons read the same icons.
ICONS = {Choice.left: "👈", Choice.right: "👉", Choice.tie: "🤝", Choice.both_bad: "👎"}
KEYS = {Choice.left: "1", Choice.right: "2", Choice.tie: "3", Choice.both_bad: "4", Choice.skip: "S"}
UNDO_ID = "label-undo"
SKIPPED_COLOUR = "#a8a29e"  # the skipped part of the progress bar
UNDO_KEYS = ("U", "Backspace")


def button_text(choice: Choice) -> str:
    """"👈 A is better", "🤝 Tie", "Skip"."""
    words = choice.words
    return f"{ICONS.get(choice, '')} {words[0].upper()}{words[1:]}".strip()


def button_id(choice: Choice) -> str:
    """The button's elem_id: label-a and label-b for the answers shown as A and B, label-tie, ..."""
    return "label-" + {Choice.left: "a", Choice.right: "b"}.get(choice, choice.value).replace("_", "-")


SHORTCUTS = {**{key.lower(): button_id(choice) for choice, key in KEYS.items()},
             **{key.lower(): UNDO_ID for key in UNDO_KEYS}}
KEYBOARD_JS = """
if (!window.__wbLabelKeys) {
  window.__wbLabelKeys = true;
  const keys = __SHORTCUTS__;
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    const typing = target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
    if (typing) {
      if (event.key === "Escape" && target.closest("#label-note")) { target.blur(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) { return; }
    const id = keys[(event.key || "").toLowerCase()];
    if (!id) { return; }
    let button = document.getElementById(id);
    if (button && button.tagName !== "BUTTON") { button = button.querySelector("button"); }
    if (!button || button.offsetParent === null || button.disabled) { return; }
    event.preventDefault();
    button.click();
  });
}
""".replace("__SHORTCUTS__", json.dumps(SHORTCUTS))

SHORTCUTS_HTML = ('<div style="font-size:12px;opacity:.7">Keys: '
                  + " · ".join(f"<kbd>{KEYS[choice]}</kbd> {choice.words}" for choice in Choice)
                  + " · " + " or ".join(f"<kbd>{key}</kbd>" for key in UNDO_KEYS)
                  + " undo · <kbd>Esc</kbd> leaves the note.</div>")


# ----------------------------------------------------------------------------- pure shaping

def project_choices(projects: list[dict]) -> list[tuple[str, int]]:
    return [(f"{p['name']} ({p['complete_pairs']}/{p['pairs']} pairs complete)", p["id"]) for p in projects]


def progress_html(progress: dict | None) -> str:
    """The labeler's bar and counts: the pairs labeled out of all theirs (labeled, skipped, left), skips drawn
    apart in grey and never counted as done; the counts are written under the bar, where a narrow screen can
    wrap them (inside the bar a phone clipped them)."""
    if not progress:
        return ""
    done, left, today = progress["done"], progress["left"], progress["today"]
    skipped = progress.get("skipped", 0)  # `done` counts the skips too (neither is left for the labeler)
    labeled, total = done - skipped, done + left
    shares = [(100 * labeled / total, STATUS_COLORS["succeeded" if left == 0 else "running"], "labeled"),
              (100 * skipped / total, SKIPPED_COLOUR, "skipped")] if total else [(100.0, STATUS_COLORS["succeeded"],
                                                                                  "labeled")]
    segments = "".join(f'<div class="wb-progress-{what}" style="width:{share:.2f}%;background:{colour}"></div>'
                       for share, colour, what in shares if share > 0)
    counts = [f"{labeled} done"] + ([f"{skipped} skipped"] if skipped else []) + [f"{left} left", f"{today} today"]
    return (f'<div id="label-progress-bar" data-done="{done}" data-labeled="{labeled}" data-skipped="{skipped}" '
            f'data-left="{left}" data-today="{today}" style="min-width:0">'
            f'<div role="progressbar" aria-valuemin="0" aria-valuemax="100" '
            f'aria-valuenow="{round(100 * labeled / total) if total else 100}" aria-label="pairs labeled" '
            'style="display:flex;height:10px;border-radius:5px;overflow:hidden;background:rgba(100,116,139,.18)">'
            f'{segments}</div>'
            f'<div class="wb-progress-counts" style="font-size:13px;margin-top:4px;overflow-wrap:anywhere">'
            f'{" · ".join(counts)}</div></div>')


def answer_html(side: str, text: str | None) -> str:
    """Answer A or B as the model wrote it: its text as text (escaped, line breaks kept; Markdown would turn
    a `*` into italics and "# x" into a heading), the side's name inside the box, so both boxes line up."""
    body = (html.escape(text) if text is not None
            else '<span style="opacity:.55">No pair on screen.</span>')
    return (f'<div class="wb-answer" data-side="{side}" style="min-height:140px">'
            f'<div style="font-size:13px;font-weight:650;opacity:.75;margin-bottom:6px">Answer {side}</div>'
            '<div class="wb-answer-text" style="white-space:pre-wrap;overflow-wrap:anywhere;'
            f'font-size:15px;line-height:1.5">{body}</div></div>')


def shown_token(pair: dict) -> str:
    """What the page keeps of the pair on screen (the hidden SHOWN box): enough to submit a label for it."""
    return json.dumps({"project_id": pair["project_id"], "pair_id": pair["pair_id"],
                       "left_answer_id": pair["left"]["answer_id"], "key": uuid.uuid4().hex,
                       "shown_at": time.time()})


def read_shown(text: str | None) -> dict | None:
    """The SHOWN box's content, or None when no pair is on screen (or the box was tampered with)."""
    try:
        shown = json.loads(text or "")
        fields = ("project_id", "pair_id", "left_answer_id", "key", "shown_at")
        if isinstance(shown, dict) and all(shown.get(f) is not None for f in fields):
            return shown
    except (TypeError, ValueError):
        pass
    return None


def seconds_since(start: float, now: float | None = None) -> float:
    """Time spent on a label or a vote: a tab left open overnight counts the most a label may take (a day)."""
    spent = (time.time() if now is None else now) - float(start)
    return round(min(MAX_TIME_SPENT_S, max(0.0, spent)), 3)


def seconds_on(shown: dict, now: float | None = None) -> float:
    return seconds_since(shown["shown_at"], now)


def conversation(pair: dict) -> list[dict]:
    """The prompt as chat messages for gr.Chatbot (system turns included, shown as such)."""
    return [{"role": m["role"] if m.get("role") in ("user", "assistant", "system") else "user",
             "content": m.get("content") or ""} for m in pair["prompt"]["messages"]]


# ----------------------------------------------------------------------------- the tab

@dataclass
class LabelTab:
    settings: Any
    project: gr.Dropdown
    screen: list  # the outputs every handler that changes the pair on screen returns, in SCREEN order
    admin: Any
    work_page: gr.Tab
    manage_page: gr.Tab
    candidates: Any = None             # the Candidates sub-tab (web/ui/candidates_browser.py)
    candidates_page: gr.Tab | None = None
    thumbs: Any = None                 # the Chat thumbs sub-tab (web/ui/thumbs_view.py)
    thumbs_page: gr.Tab | None = None

    # SCREEN: shown, guidelines, progress, prompt, answer A, answer B, status, note, 5 choice buttons, undo

    def _who(self, request) -> str | None:
        user = current_user(self.settings, request)
        return user["name"] if user else None

    def _screen(self, pair: dict | None, progress: dict | None, message: str, guidelines: Any = None) -> tuple:
        """Every SCREEN output for `pair` (None: nothing to label) with a status message."""
        can_undo = gr.Button(interactive=bool(progress and progress["done"]))
        guide = gr.skip() if guidelines is None else guidelines
        if pair is None:
            return ("", guide, progress_html(progress), [], answer_html("A", None), answer_html("B", None), message,
                    "", *[gr.Button(interactive=False)] * len(Choice), can_undo)
        return (shown_token(pair), guide, progress_html(progress), conversation(pair),
                answer_html("A", pair["left"]["text"]), answer_html("B", pair["right"]["text"]), message, "",
                *[gr.Button(interactive=True)] * len(Choice), can_undo)

    def _unchanged(self, message: str) -> tuple:
        return (gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), message, gr.skip(),
                *[gr.skip()] * (len(Choice) + 1))

    @staticmethod
    def _nothing_left(project_name: str, progress: dict) -> str:
        if progress["pairs"] and progress["complete_pairs"] >= progress["pairs"]:
            why = "every pair has all the labels it needs"
        else:
            why = "the pairs you have not labeled are taken by other labelers or have all their labels"
        return message_html(f"Nothing left for you in {project_name}: {why}. Thank you! "
                            f"({progress['done']} labeled by you, {progress['today']} today.)", "ok")

    def _next(self, session, who: str | None, project_id: int, message: str = "", guidelines: Any = None) -> tuple:
        from web.services import labeling

        return self._show(session, who, project_id, labeling.next_pair(session, who, project_id), message, guidelines)

    def _show(self, session, who: str | None, project_id: int, pair: dict | None, message: str = "",
              guidelines: Any = None, progress: dict | None = None) -> tuple:
        """The screen for `pair` (a `next_pair` answer), or the nothing-left message when it is None
        (with `progress`, the labeler's counts when the caller has them already)."""
        from web.services import labeling

        if pair is None:
            project = labeling.get_project(project_id, who, session=session)
            progress = progress or labeling.progress(session, who, project_id)
            return self._screen(None, progress, message + self._nothing_left(project["name"], progress), guidelines)
        return self._screen(pair, pair["progress"], message, guidelines)

    def refresh(self, chosen: int | None = None, request: gr.Request | None = None):
        """The projects this user may label; the chosen one kept (or the only one picked)."""
        from web.services import ServiceError, labeling

        try:
            projects = labeling.list_projects(self._who(request))
        except ServiceError:
            projects = []
        choices = project_choices(projects)
        ids = [value for _, value in choices]
        value = chosen if chosen in ids else (ids[0] if len(ids) == 1 else None)
        return gr.Dropdown(choices=choices, value=value)

    def open_project(self, project_id: int | None, request: gr.Request | None = None) -> tuple:
        from web.services import ServiceError, labeling

        if not project_id:
            return self._screen(None, None, message_html("Choose a project to label.", "info"), "")
        who = self._who(request)
        try:
            with db_session(self.settings) as session:
                project = labeling.get_project(int(project_id), who, session=session)
                guidelines = project["guidelines"].strip() or "*No guidelines for this project.*"
                return self._next(session, who, int(project_id), guidelines=guidelines)
        except ServiceError as error:
            return self._screen(None, None, message_html(error_text(error), "error"), "")

    def submit(self, choice: Choice, shown_text: str, note: str, request: gr.Request | None = None) -> tuple:
        from web.services import Conflict, ServiceError, labeling

        shown = read_shown(shown_text)
        if shown is None:
            return self._unchanged(message_html("No pair on screen: choose a project first.", "error"))
        who, project_id = self._who(request), int(shown["project_id"])
        try:
            with db_session(self.settings) as session:
                try:
                    stored = labeling.submit_label(session, who, project_id, int(shown["pair_id"]), choice,
                                                   str(shown["left_answer_id"]), note=(note or "").strip() or None,
                                                   time_spent_s=seconds_on(shown), idempotency_key=str(shown["key"]),
                                                   and_next=True)
                except Conflict as error:  # the pair got its last label from someone else meanwhile
                    return self._next(session, who, project_id, message_html(f"Not stored — {error_text(error)}.",
                                                                             "warn"))
                message = (f"Already stored for this pair ({stored['label']}); here is the next one." if stored["duplicate"]
                           else f"Stored: {Choice(choice).words}.")
                return self._show(session, who, project_id, stored["next"], message_html(message, "ok"),
                                  progress=stored["progress"])
        except ServiceError as error:
            return self._unchanged(message_html(f"Not stored — {error_text(error)}", "error"))

    def undo(self, project_id: int | None, request: gr.Request | None = None) -> tuple:
        from web.services import ServiceError, labeling

        if not project_id:
            return self._unchanged(message_html("Choose a project first.", "error"))
        try:
            with db_session(self.settings) as session:
                pair = labeling.undo_last_label(session, self._who(request), int(project_id))
        except ServiceError as error:
            return self._unchanged(message_html(f"Nothing undone — {error_text(error)}.", "error"))
        return self._screen(pair, pair["progress"], message_html(
            "Your last label is removed: here is that pair again.", "info"))

    def on_load(self, request: gr.Request | None = None):
        from web.services import Action, can

        manager = can(current_user(self.settings, request), Action.manage_labeling)
        return gr.Tab(visible=manager)

    def training_team_shown(self, request: gr.Request | None = None):
        """A sub-tab for the training team only (Candidates, Chat thumbs): they name their models, and labelers
        label blind."""
        from web.services import Action, can

        return gr.Tab(visible=can(current_user(self.settings, request), Action.read_training))

    def wire(self, blocks: gr.Blocks, page: gr.Tab) -> None:
        private = {"api_visibility": "private"}
        blocks.load(self.on_load, None, [self.manage_page], queue=False, **private)
        # Opening the tab (or its Label sub-tab) offers projects created meanwhile.
        for opened in (page, self.work_page):
            opened.select(self.refresh, [self.project], [self.project], queue=False, **private)
        self.admin.wire(blocks, self.manage_page, self.work_page)
        for team_page in (self.candidates_page, self.thumbs_page):
            blocks.load(self.training_team_shown, None, [team_page], queue=False, **private)
        self.candidates.wire(self.candidates_page)
        self.thumbs.wire(self.thumbs_page)


def build(settings) -> LabelTab:
    from web.ui import candidates_browser, labeling_admin, thumbs_view

    with gr.Tabs(elem_id="label-subtabs", selected="label-work"):
        with gr.Tab("Label", id="label-work", elem_id="tab-label-work") as work_page:
            project = gr.Dropdown(label="Project", choices=[], value=None, elem_id="label-project")
            # Under the project, the page's whole width: beside it a phone squeezed the bar and clipped its counts.
            progress = gr.HTML(elem_id="label-progress")
            with gr.Accordion("Guidelines", open=True, elem_id="label-guidelines-panel"):
                guidelines = gr.Markdown(elem_id="label-guidelines")
            prompt = gr.Chatbot(label="Prompt", height=220, elem_id="label-prompt", feedback_options=None,
                                render_markdown=False)  # what the person wrote, as text
            with gr.Row(equal_height=True, elem_id="label-answers"):
                # In block containers, like the prompt's: both boxes start, end and line up as the blocks around.
                left = gr.HTML(answer_html("A", None), elem_id="label-left", container=True)
                right = gr.HTML(answer_html("B", None), elem_id="label-right", container=True)
            with gr.Row():
                buttons = [gr.Button(f"{button_text(choice)} [{KEYS[choice]}]", interactive=False,
                                     elem_id=button_id(choice),
                                     variant="primary" if choice in (Choice.left, Choice.right) else "secondary")
                           for choice in Choice]
            with gr.Row(equal_height=True):
                note = gr.Textbox(label="Note (optional, saved with the label)", lines=1, max_lines=4, scale=4,
                                  elem_id="label-note")
                undo = gr.Button(f"↶ Undo [{UNDO_KEYS[0]}]", interactive=False, elem_id=UNDO_ID, scale=1,
                                 min_width=100)
            status = gr.HTML(elem_id="label-status")
            gr.HTML(SHORTCUTS_HTML, js_on_load=KEYBOARD_JS, elem_id="label-keys")
            shown = gr.Textbox(visible="hidden", elem_id="label-shown")
        with gr.Tab("Projects & agreement", id="label-manage", elem_id="tab-label-manage",
                    visible=False) as manage_page:  # shown on load to admins and trainers
            admin = labeling_admin.build(settings)
        with gr.Tab("Candidates", id="label-candidates", elem_id="tab-label-candidates",
                    visible=False) as candidates_page:  # shown on load to the training team
            candidates = candidates_browser.build(settings)
        with gr.Tab("Chat thumbs", id="label-thumbs", elem_id="tab-label-thumbs",
                    visible=False) as thumbs_page:  # shown on load to the training team
            thumbs = thumbs_view.build(settings)

    screen = [shown, guidelines, progress, prompt, left, right, status, note, *buttons, undo]
    tab = LabelTab(settings=settings, project=project, screen=screen, admin=admin, work_page=work_page,
                   manage_page=manage_page, candidates=candidates, candidates_page=candidates_page, thumbs=thumbs,
                   thumbs_page=thumbs_page)
    private = {"api_visibility": "private"}
    project.change(tab.open_project, [project], screen, **private)

    def make_submit(choice: Choice):
        def submit(shown_text: str, note_text: str, request: gr.Request):
            return tab.submit(choice, shown_text, note_text, request)

        submit.__name__ = f"submit_{choice.value}"
        return submit

    for choice, button in zip(Choice, buttons):
        button.click(make_submit(choice), [shown, note], screen, **private)
    undo.click(tab.undo, [project], screen, **private)
    return tab
