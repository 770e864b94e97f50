"""Label ▸ Candidates: the answers generate jobs made, prompt by prompt, for the training team to review.

Each prompt is a card with its K answers side by side; each answer says which model wrote it, with which sampling
settings and seed, and how long it is. Filters keep one generate job or one model; the search finds words in a
prompt or in any of its answers (found words are marked); pages of `PAGE` prompts, newest first.

The rows are `web.services.candidates`'s (Action.read_training: candidates name their models, so labelers, who
label blind, never see this sub-tab). Texts are shown as the model wrote them: escaped, line breaks kept.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

import gradio as gr

from web.ui import current_user, error_text
from web.ui.plots import job_title, message_html

PAGE = 10
ALL = 0  # the filters' "all" choice

CARDS_CSS = """
.wb-candidates { display: flex; flex-direction: column; gap: 14px; }
.wb-candidate { border: 1px solid var(--border-color-primary, #e5e7eb); border-radius: 10px; padding: 10px 12px; }
.wb-candidate-prompt { white-space: pre-wrap; overflow-wrap: anywhere; font-weight: 600; margin: 4px 0 10px 0; }
.wb-candidate-answers { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 10px; }
.wb-candidate-answer { border-left: 3px solid #6366f1; padding: 4px 10px; background: rgba(99,102,241,.05);
  border-radius: 4px; }
.wb-candidate-meta { font-size: 12px; opacity: .75; margin-bottom: 4px; }
.wb-candidate-text { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 14px; line-height: 1.45; }
.wb-candidates mark { background: #fde68a; color: inherit; padding: 0 1px; border-radius: 2px; }
"""


# ----------------------------------------------------------------------------- pure shaping

def highlighted(text: str, search: str | None) -> str:
    """`text` escaped for HTML, each occurrence of `search` (any case) marked."""
    if not search:
        return html.escape(text)
    pieces, last = [], 0
    for found in re.finditer(re.escape(search), text, flags=re.IGNORECASE):
        pieces += [html.escape(text[last:found.start()]), f"<mark>{html.escape(found.group(0))}</mark>"]
        last = found.end()
    return "".join(pieces) + html.escape(text[last:])


def sampling_text(sampling: dict | None, seed: Any = None, tokens: Any = None) -> str:
    """"temperature 0.8 · top-k 50 · up to 64 tokens · seed 3 · 41 tokens": how an answer was sampled."""
    sampling = sampling or {}
    parts = []
    if sampling.get("temperature") is not None:
        parts.append("greedy" if sampling["temperature"] == 0 else f"temperature {sampling['temperature']:g}")
    for key, name in (("top_k", "top-k"), ("top_p", "top-p")):
        if sampling.get(key) is not None:
            parts.append(f"{name} {sampling[key]:g}")
    if sampling.get("max_new_tokens") is not None:
        parts.append(f"up to {sampling['max_new_tokens']} tokens")
    if seed is not None:
        parts.append(f"seed {seed}")
    if tokens is not None:
        parts.append(f"{tokens} tokens")
    return " · ".join(parts) or "settings not recorded"


def prompt_text(prompt: dict) -> str:
    """A prompt as text: a chat's turns one per line ("system: ...", "user: ..."), a single question as itself."""
    messages = prompt.get("messages") or []
    if len(messages) == 1 and messages[0].get("role") == "user":
        return messages[0].get("content") or ""
    if messages:
        return "\n".join(f"{m.get('role', 'user')}: {m.get('content') or ''}" for m in messages)
    return prompt.get("text") or ""


def candidates_html(page: dict, search: str | None = None) -> str:
    """The page's prompts as cards, each with its answers (model, sampling settings, text)."""
    if not page["prompts"]:
        return message_html("No candidate answers match. Generate some in Train ▸ Candidates, or change the "
                            "filters." if page["total"] == 0 else "No more prompts: go back a page.", "info")
    cards = []
    for prompt in page["prompts"]:
        answers = "".join(
            f'<div class="wb-candidate-answer" data-completion="{answer["completion_id"]}">'
            f'<div class="wb-candidate-meta"><b>{html.escape(answer["model"] or "model not recorded")}</b> · '
            f'{html.escape(sampling_text(answer["sampling"], answer["seed"], answer["tokens"]))}'
            f' · job #{answer["job_id"]}</div>'
            f'<div class="wb-candidate-text">{highlighted(answer["text"], search)}</div></div>'
            for answer in prompt["answers"])
        cards.append(
            f'<div class="wb-candidate" data-prompt="{prompt["prompt_id"]}">'
            f'<div class="wb-candidate-meta">prompt #{prompt["prompt_id"]} · {len(prompt["answers"])} answer(s)</div>'
            f'<div class="wb-candidate-prompt">{highlighted(prompt_text(prompt), search)}</div>'
            f'<div class="wb-candidate-answers">{answers}</div></div>')
    return f'<div class="wb-candidates">{"".join(cards)}</div>'


def page_note(page: dict) -> str:
    """"prompts 11–20 of 57"."""
    shown = len(page["prompts"])
    if not shown:
        return f"{page['total']} prompts"
    return f"prompts {page['offset'] + 1}–{page['offset'] + shown} of {page['total']}"


def source_choices(sources: dict) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(generate-job choices, model choices) for the filters, "all" first."""
    jobs = [("all generate jobs", ALL)] + [
        (f"#{job['id']} {job_title(job)} · {job['answers']} answers" + (f" · {job['owner']}" if job["owner"] else ""),
         job["id"]) for job in sources["jobs"]]
    models = [("all models", ALL)] + [(f"{model['name']} · {model['answers']} answers", model["id"])
                                      for model in sources["models"]]
    return jobs, models


# ----------------------------------------------------------------------------- the sub-tab

@dataclass
class CandidatesBrowser:
    settings: Any
    refresh_fn: Any
    refresh_inputs: list
    refresh_outputs: list

    def wire(self, page: gr.Tab) -> None:
        """Opening the sub-tab offers the jobs and models made meanwhile and shows the first page."""
        page.select(self.refresh_fn, self.refresh_inputs, self.refresh_outputs, show_progress="hidden",
                    api_visibility="private")


def build(settings) -> CandidatesBrowser:
    from web.services import ServiceError, candidates

    gr.Markdown("Every prompt that generate jobs answered, with its candidate answers: which model wrote each, "
                "how it was sampled. Search words in prompts and answers; keep one job or one model.")
    with gr.Row(equal_height=True):
        job = gr.Dropdown(label="Generate job", choices=[("all generate jobs", ALL)], value=ALL, scale=2,
                          elem_id="candidates-job")
        model = gr.Dropdown(label="Model", choices=[("all models", ALL)], value=ALL, scale=2,
                            elem_id="candidates-model")
        search = gr.Textbox(label="Search", placeholder="words in a prompt or an answer; Enter", scale=3,
                            elem_id="candidates-search", max_length=candidates.MAX_SEARCH_CHARS)
    with gr.Row(equal_height=True):
        previous = gr.Button("← Previous", size="sm", elem_id="candidates-previous", interactive=False, scale=1,
                             min_width=120)
        note = gr.HTML(elem_id="candidates-page", scale=4)
        following = gr.Button("Next →", size="sm", elem_id="candidates-next", interactive=False, scale=1,
                              min_width=120)
    cards = gr.HTML(elem_id="candidates-cards", css_template=CARDS_CSS)
    offset = gr.State(0)

    def show(job_id, model_id, words, start, request: gr.Request = None):
        """(offset, page note, previous, next, cards) for the filters, from `start`."""
        viewer = current_user(settings, request)
        start = max(0, int(start or 0))
        try:
            page = candidates.browse_candidates(viewer, job_id=job_id or None, model_id=model_id or None,
                                                search=words, offset=start, limit=PAGE)
        except ServiceError as error:
            return (gr.skip(), "", gr.Button(interactive=False), gr.Button(interactive=False),
                    message_html(error_text(error), "error"))
        return (start, f'<div style="text-align:center;padding-top:4px">{html.escape(page_note(page))}</div>',
                gr.Button(interactive=start > 0), gr.Button(interactive=start + PAGE < page["total"]),
                candidates_html(page, (words or "").strip()))

    def refresh(job_id, model_id, words, request: gr.Request = None):
        """The filters' choices (a filter whose job or model is gone goes back to all) and the first page."""
        try:
            sources = candidates.candidate_sources(current_user(settings, request))
        except ServiceError as error:
            return (gr.skip(), gr.skip(), 0, "", gr.Button(interactive=False), gr.Button(interactive=False),
                    message_html(error_text(error), "error"))
        jobs, models = source_choices(sources)
        job_id = job_id if job_id in [value for _, value in jobs] else ALL
        model_id = model_id if model_id in [value for _, value in models] else ALL
        return (gr.Dropdown(choices=jobs, value=job_id), gr.Dropdown(choices=models, value=model_id),
                *show(job_id, model_id, words, 0, request))

    page_outputs = [offset, note, previous, following, cards]
    private = {"show_progress": "hidden", "api_visibility": "private"}

    def first_page(job_id, model_id, words, request: gr.Request = None):
        return show(job_id, model_id, words, 0, request)

    def previous_page(job_id, model_id, words, start, request: gr.Request = None):
        return show(job_id, model_id, words, int(start or 0) - PAGE, request)

    def next_page(job_id, model_id, words, start, request: gr.Request = None):
        return show(job_id, model_id, words, int(start or 0) + PAGE, request)

    for changed in (job.input, model.input, search.submit):
        changed(first_page, [job, model, search], page_outputs, **private)
    previous.click(previous_page, [job, model, search, offset], page_outputs, **private)
    following.click(next_page, [job, model, search, offset], page_outputs, **private)
    return CandidatesBrowser(settings=settings, refresh_fn=refresh, refresh_inputs=[job, model, search],
                             refresh_outputs=[job, model, *page_outputs])
