"""Arena tab: two anonymous chat models answer the same prompt side by side, streaming; you vote A, B, tie or
both bad; only then are their names shown (labelers are never told them while the workbench keeps them blind,
WORKBENCH_BLIND_LABELERS, and read the leaderboard by `model #<id>`). Every vote is a preference pair for reward and DPO jobs, and the
leaderboard (Bradley–Terry ratings on the Elo scale, 95 % bootstrap intervals) updates after each vote.

Which model is on which side lives only in the server-side session state (gr.State), never in the page,
so nothing in the browser gives the models away before the vote. The rules (which models may battle, how a
vote is stored, one vote per battle) are `web.services.arena`'s, shared with the REST API. Admins and trainers
choose the pool battles are drawn from in "Models in the arena" (hidden from everyone else). After a vote,
"Next battle" clears the screen for the next message. Under the leaderboard: each model's battles won, tied and
lost, why two equal ratings can have intervals of different widths, and the win-rate matrix.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import Any, Iterator

import gradio as gr

from llm.preference_labels import VOTES, Choice
from web.ui import current_user, db_session, error_text
from web.ui.label_tab import button_text, seconds_since
from web.ui.plots import message_html

MIN_YIELD_SECONDS = 0.03
# "Next battle" puts the cursor in the message box, ready for the next question.
FOCUS_INPUT_JS = ("() => { setTimeout(() => document.querySelector('#arena-input textarea, #arena-input input')"
                  "?.focus(), 50); }")


INTERVALS_EXPLAINED = ("Two models can share a rating and not its interval: the interval says how sure the rating "
                       "is, and a model with fewer battles, or battles against fewer opponents, is pinned down less, "
                       "so its interval is wider.")


def leaderboard_html(rows: list[dict], table: dict | None = None) -> str:
    """The leaderboard (rank, model, kind, rating, interval, battles and, with `table` — services.arena's
    battle_table — won · tied · lost), why intervals differ, and the win-rate matrix."""
    if not rows:
        return ('<div class="wb-empty" style="opacity:.7;padding:8px">No votes yet: battle and vote, and the '
                'models appear here.</div>')
    played = {model["model_id"]: model for model in (table or {}).get("models", [])}
    body = "".join(
        f"<tr><td>{rank}</td><td>{html.escape(row['name'])}</td><td>{html.escape(row['kind'] or '')}</td>"
        f"<td><b>{row['rating']:.0f}</b></td>"
        f"<td>{row['lower']:.0f} – {row['upper']:.0f}</td><td>{row['votes']}</td>"
        + (f"<td>{record['won']} · {record['tied']} · {record['lost']}</td>"
           if (record := played.get(row.get("model_id"))) else ("<td></td>" if played else ""))
        + "</tr>"
        for rank, row in enumerate(rows, start=1))
    head = ("<th>#</th><th>model</th><th>kind</th><th>rating</th><th>95 % interval</th><th>battles</th>"
            + ("<th>won · tied · lost</th>" if played else ""))
    return ('<table class="wb-leaderboard" style="width:100%;font-size:14px">'
            f'<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            '<div style="font-size:12px;opacity:.75;margin-top:4px">Bradley–Terry on the Elo scale: a 100-point gap '
            'means the higher model wins about 64 % of its battles.</div>'
            f'<p class="wb-intervals-why" style="font-size:13px;margin:6px 0 0 0">{html.escape(INTERVALS_EXPLAINED)}</p>'
            + (win_rate_matrix_html(table) if table else ""))


def win_rate_matrix_html(table: dict) -> str:
    """Each model's observed win rate against each other (row against column; a tie or both bad is half a win),
    with the battles behind it; green above 50 %, red below, blank where two never met."""
    models = table["models"]
    if len(models) < 2:
        return ""
    head = "".join(f'<th style="font-weight:600">{html.escape(model["name"])}</th>' for model in models)
    body = []
    for model, cells in zip(models, table["win_rates"]):
        shown = []
        for cell in cells:
            if cell is None:
                shown.append('<td style="opacity:.4;text-align:center">—</td>')
                continue
            rate = cell["win_rate"]
            green, strength = rate >= .5, abs(rate - .5) * .9
            tint = f"rgba(22,163,74,{strength:.2f})" if green else f"rgba(220,38,38,{strength:.2f})"
            shown.append(f'<td style="text-align:center;background:{tint}" data-battles="{cell["battles"]}">'
                         f'{rate:.0%} <span style="opacity:.6;font-size:11px">({cell["battles"]})</span></td>')
        body.append(f'<tr><th style="text-align:left">{html.escape(model["name"])}</th>{"".join(shown)}</tr>')
    return ('<div class="wb-win-rates" style="margin-top:12px"><div style="font-size:13px;font-weight:600">'
            'Win rate of each model (row) against each other (column), battles in brackets</div>'
            '<table style="width:auto;font-size:13px;border-collapse:collapse"><thead><tr><th></th>'
            f'{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def leaderboard_figure(rows: list[dict]):
    """Ratings with their intervals, best at the top."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, max(1.6, 0.5 * len(rows) + 0.8)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    if not rows:
        ax.text(0.5, 0.5, "no votes yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    ordered = list(reversed(rows))
    positions = list(range(len(ordered)))
    ratings = [row["rating"] for row in ordered]
    errors = [[row["rating"] - row["lower"] for row in ordered], [row["upper"] - row["rating"] for row in ordered]]
    ax.errorbar(ratings, positions, xerr=errors, fmt="o", color="#4f46e5", ecolor="#a5b4fc", capsize=4)
    ax.set_yticks(positions, [row["name"] for row in ordered])
    ax.axvline(1000, color="#cbd5e1", linestyle="--", linewidth=1)
    ax.set_xlabel("rating (95 % interval)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def pool_choices(models: list[dict]) -> tuple[list[tuple[str, int]], list[int]]:
    """(checkbox choices "name (kind #id)" → id, the ids in the pool) for "Models in the arena"."""
    choices = [(f"{m['name']} ({m['kind']} #{m['id']})", m["id"]) for m in models]
    return choices, [m["id"] for m in models if m["in_arena"]]


@dataclass
class ArenaTab:
    settings: Any
    board: gr.HTML
    figure: gr.Plot
    pool_box: gr.Accordion
    pool: gr.CheckboxGroup

    def refresh(self, request: gr.Request | None = None):
        from web.services import arena

        viewer = current_user(self.settings, request)
        with db_session(self.settings) as session:
            rows = arena.leaderboard(session, viewer=viewer)
            table = arena.battle_table(session, viewer=viewer)
        return leaderboard_html(rows, table), leaderboard_figure(rows)

    def refresh_pool(self, request: gr.Request | None = None):
        """The pool editor, shown (with every chat model) only to those who may change the pool."""
        from web.services import Action, arena, can

        if not can(current_user(self.settings, request), Action.manage_arena):
            return gr.Accordion(visible=False), gr.CheckboxGroup(choices=[], value=[])
        with db_session(self.settings) as session:
            choices, chosen = pool_choices(arena.arena_models(session, everyone=True))
        return gr.Accordion(visible=True), gr.CheckboxGroup(choices=choices, value=chosen)

    def wire(self, blocks: gr.Blocks, page) -> None:
        private = {"api_visibility": "private"}
        page.select(self.refresh, None, [self.board, self.figure], **private)
        page.select(self.refresh_pool, None, [self.pool_box, self.pool], queue=False, **private)
        blocks.load(self.refresh_pool, None, [self.pool_box, self.pool], queue=False, **private)


def build(settings) -> ArenaTab:
    from web.services import arena

    gr.Markdown("Two anonymous chat models answer the same message. Vote for the better answer; the names are "
                "shown after your vote (not to labelers, while labelers are kept blind), and the vote becomes a "
                "preference pair for reward and DPO training.")
    battle_state = gr.State(None)  # server-side: {"battle_id", "started"}: what the vote names, and when
    with gr.Row():
        prompt = gr.Textbox(label="Your message to both models",
                            placeholder="Ask both models something and press Enter", scale=6, elem_id="arena-input",
                            lines=1, max_lines=6)
        start = gr.Button("⚔️ Battle", variant="primary", scale=1, min_width=100, elem_id="arena-battle")
    with gr.Row(equal_height=True):
        left = gr.Chatbot(label="Model A", height=300, elem_id="arena-left", feedback_options=None)
        right = gr.Chatbot(label="Model B", height=300, elem_id="arena-right", feedback_options=None)
    with gr.Row():
        buttons = [gr.Button(button_text(choice), interactive=False, elem_id=f"arena-vote-{choice.replace('_', '-')}")
                   for choice in VOTES]
        next_battle = gr.Button("⏭ Next battle", interactive=False, variant="primary", elem_id="arena-next")
    status = gr.HTML(elem_id="arena-status")
    gr.Markdown("#### Leaderboard")
    board = gr.HTML(leaderboard_html([]), elem_id="arena-leaderboard")
    figure = gr.Plot(elem_id="arena-plot", show_label=False)
    with gr.Accordion("Models in the arena", open=False, visible=False, elem_id="arena-pool-box") as pool_box:
        gr.Markdown("Battles are drawn from the ticked chat models. A new SFT or DPO model enters until it is "
                    "taken out.")
        pool = gr.CheckboxGroup(label="Pool", choices=[], elem_id="arena-pool")
        save_pool = gr.Button("Save the pool", elem_id="arena-pool-save")
        pool_status = gr.HTML(elem_id="arena-pool-status")
    tab = ArenaTab(settings=settings, board=board, figure=figure, pool_box=pool_box, pool=pool)

    def save(chosen: list[int] | None, request: gr.Request):
        try:
            with db_session(settings) as session:
                user = current_user(settings, request)
                models = arena.set_arena_models(session, user["name"] if user else None, chosen or [])
        except Exception as error:
            return gr.skip(), message_html(error_text(error), "error")
        choices, in_pool = pool_choices(models)
        return (gr.CheckboxGroup(choices=choices, value=in_pool),
                message_html(f"{len(in_pool)} of {len(models)} chat models are in the arena.", "ok"))

    save_pool.click(save, [pool], [pool, pool_status], api_visibility="private")

    def run_battle(message: str, request: gr.Request) -> Iterator[tuple]:
        message = (message or "").strip()
        locked = [gr.Button(interactive=False)] * len(buttons)
        if not message:
            yield (gr.skip(), gr.skip(), None, message_html("Type a message first.", "error"), *locked)
            return
        messages = [{"role": "user", "content": message}]
        try:
            user = current_user(settings, request)
            with db_session(settings) as session:
                left_id, right_id = arena.draw_battle(session)
        except Exception as error:
            yield ([], [], None, message_html(error_text(error), "error"), *locked)
            return
        sides = {"left": {"model_id": left_id}, "right": {"model_id": right_id}}
        shown = {"left": [{"role": "user", "content": message}, {"role": "assistant", "content": ""}],
                 "right": [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]}
        yield (shown["left"], shown["right"], None, message_html("the models are answering…", "info"), *locked)
        try:
            for side in ("left", "right"):
                seed = int(time.time_ns() % 2 ** 31)
                with db_session(settings) as session:
                    deltas = arena.generate_answer(settings, session, sides[side]["model_id"], messages, seed=seed,
                                                   stream=True)
                text, last = "", 0.0
                for delta in deltas:
                    text += delta
                    if time.perf_counter() - last >= MIN_YIELD_SECONDS:
                        shown[side][-1]["content"] = text
                        last = time.perf_counter()
                        yield (shown["left"], shown["right"], None, gr.skip(), *locked)
                shown[side][-1]["content"] = text or "(no answer)"
                sides[side].update({"text": text, "seed": seed,
                                    "sampling": {"max_new_tokens": 128, "temperature": 0.8, "top_k": 50}})
            with db_session(settings) as session:
                stored = arena.record_answers(session, user["name"] if user else None, messages,
                                              sides["left"], sides["right"])
        except Exception as error:
            yield (shown["left"], shown["right"], None, message_html(error_text(error), "error"), *locked)
            return
        state = {"battle_id": stored["battle_id"], "started": time.time()}
        open_buttons = [gr.Button(interactive=True)] * len(buttons)
        yield (shown["left"], shown["right"], state, message_html("Which answer is better?", "info"), *open_buttons)

    outputs = [left, right, battle_state, status, *buttons]
    prompt.submit(run_battle, [prompt], outputs, concurrency_limit=2, concurrency_id="chat",
                  show_progress="hidden", api_visibility="private")
    start.click(run_battle, [prompt], outputs, concurrency_limit=2, concurrency_id="chat",
                show_progress="hidden", api_visibility="private")

    def voted(state: dict | None):
        """"Next battle" is offered once the battle on screen has its vote (its state is cleared)."""
        return gr.Button(interactive=state is None)

    def new_battle():
        """A clean screen for the next battle: both answers, the status and the message cleared, no vote open."""
        return ([], [], None, message_html("Type your next message for a new pair of models.", "info"), "",
                gr.Button(interactive=False), *[gr.Button(interactive=False)] * len(buttons))

    def make_vote(choice: Choice):
        def cast(state: dict | None, request: gr.Request):
            locked = [gr.Button(interactive=False)] * len(buttons)
            if not state:
                return (None, message_html("Start a battle first.", "error"), gr.skip(), gr.skip(), *locked)
            try:
                user = current_user(settings, request)
                with db_session(settings) as session:
                    result = arena.vote(session, user["name"] if user else None, state["battle_id"], choice,
                                        seconds_since(state["started"]))
            except Exception as error:
                return (state, message_html(error_text(error), "error"), gr.skip(), gr.skip(), *locked)
            if result["left_model"] is None:  # a blind labeler (WORKBENCH_BLIND_LABELERS)
                reveal = "Thanks — your vote is stored. Labelers are not told which models answered."
            else:
                reveal = (f"Model A was {result['left_model']['name'] or '?'}, model B was "
                          f"{result['right_model']['name'] or '?'}. Thanks — your vote is stored.")
            board_html, board_figure = tab.refresh(request)
            return (None, message_html(reveal, "ok"), board_html, board_figure, *locked)

        return cast

    for choice, button in zip(VOTES, buttons):
        button.click(make_vote(choice), [battle_state], [battle_state, status, board, figure, *buttons],
                     api_visibility="private").then(voted, [battle_state], [next_battle], queue=False,
                                                    api_visibility="private")
    for started in (prompt.submit, start.click):  # a battle under way: no next one yet
        started(lambda: gr.Button(interactive=False), None, [next_battle], queue=False, api_visibility="private")
    next_battle.click(new_battle, None, [left, right, battle_state, status, prompt, next_battle, *buttons],
                      queue=False, api_visibility="private", js=FOCUS_INPUT_JS)
    return tab
