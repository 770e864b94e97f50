"""Chat tab: pick a model, type, and watch the reply stream in, with the sampling settings at hand.

Generation runs in the web process on the CPU through `web.services.model_cache` (see that module for
why). The handler is a generator: it yields the conversation with a growing last message for
every text delta `llm.generate.stream_text` produces, and Gradio streams each yield to the browser.

What a "reply" is depends on the model:
  - base model: a document completer. The reply continues the text of your latest message (the
    conversation before it is not sent: a base model has no notion of turns). "Stop at end of
    document" ends the reply where the model closes the document (<|endoftext|>).
  - sft / dpo models (LoRA adapters included: they load onto their base): the whole conversation,
    after the system prompt, is rendered with the one chat template (llm/chat.py) and the reply
    stops at <|im_end|>. User text is encoded as ordinary text, so a literal "<|im_start|>" typed by
    a user never becomes a special token.

Labelers are offered the chat models only, and not by name while labelers are kept blind
(`services.list_models(viewer=...)`, WORKBENCH_BLIND_LABELERS). The Jobs tab's
"→ model #n" link opens this tab with model n selected (`ChatTab.show_model`).

👍 / 👎 under a chat model's answer store a thumb on it with the model that wrote it and the conversation it
answered (web/services/feedback.py: one per person and answer; the other thumb changes it, clicking the same one
again takes it back): the unpaired feedback the KTO job kind learns from. Each answer remembers its model
(`answer_models`), so switching models mid-conversation does not misfile a thumb.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import Any, Iterator

import gradio as gr

from web.services.models import CHAT_MODEL_KINDS
from web.ui import current_user, db_session, error_text
from web.ui.plots import field, human_count, message_html

CHAT_KINDS = tuple(kind.value for kind in CHAT_MODEL_KINDS)  # the chat template's; base models complete documents
NO_MODELS = "No models yet — train one in Train ▸ Pretrain (or ask an admin to import GPT-2 in Models)."
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
MIN_YIELD_SECONDS = 0.02  # at most ~50 browser updates a second, however fast the model is


def model_choices(models: list[dict]) -> list[tuple[str, int]]:
    """Every model, labelled with how it answers: chat (the template) or completion (a base model)."""
    return [(f"#{field(m, 'id')} · {field(m, 'name')} ({field(m, 'kind')} · "
             f"{'chat' if field(m, 'kind') in CHAT_KINDS else 'completion'})", int(field(m, "id"))) for m in models]


def model_info_html(model: dict | None, any_models: bool = True) -> str:
    if not model:
        return message_html(NO_MODELS if not any_models else "Choose a model.", "info")
    config = field(model, "config") or {}
    shape = ""
    if config:
        shape = (f"{config.get('n_layer', '?')} layers · {config.get('n_embd', '?')} wide · "
                 f"context {config.get('block_size', '?')} tokens")
    kind = field(model, "kind")
    how = ("completes your text as a document" if kind == "base"
           else "answers in the chat format (<|im_start|>…<|im_end|>)")
    job = f" · trained by job #{field(model, 'job_id')}" if field(model, "job_id") else ""
    return (f'<div style="font-size:13px;line-height:1.5"><b>{html.escape(str(field(model, "name")))}</b> '
            f'<span style="opacity:.7">({html.escape(str(kind))}, '
            f'tokenizer {html.escape(str(field(model, "tokenizer")))}'
            f'{job})</span><br>{html.escape(shape)}<br><i>{html.escape(how)}</i></div>')


def render_prompt(kind: str, history: list[dict], tokenizer, system_prompt: str | None = None
                  ) -> tuple[str | list[int], set[int]]:
    """(prompt, extra stop ids) for a conversation whose last message is the user's.

    Base models (or tokenizers without chat specials) get the latest user message as a document to
    continue. Chat models get the whole conversation through the one chat template (llm/chat.py),
    with the system prompt first, and stop at <|im_end|>.
    """
    from llm.chat import has_chat_template
    from llm.generate import chat_prompt

    last_user = next((m["content"] for m in reversed(history) if m.get("role") == "user"), "")
    if kind not in CHAT_KINDS or not has_chat_template(tokenizer):
        return str(last_user), set()
    messages = [{"role": m["role"], "content": m["content"]} for m in history
                if m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)]
    return chat_prompt(tokenizer, messages, (system_prompt or "").strip() or None)  # the CLI's path too


def sampling_settings(max_new_tokens, temperature, top_k, top_p, seed, stop_at_end):
    """llm.generate.SamplingSettings from the sliders: top_k 0 and top_p 1 mean "off", seed blank/-1 random."""
    from llm.generate import SamplingSettings

    seed_value = None if seed is None or seed == "" or int(seed) < 0 else int(seed)
    return SamplingSettings(
        max_new_tokens=int(max_new_tokens),
        temperature=float(temperature),
        top_k=int(top_k) if top_k and int(top_k) > 0 else None,
        top_p=float(top_p) if top_p is not None and 0 < float(top_p) < 1 else None,
        seed=seed_value,
        stop_at_end_of_text=bool(stop_at_end),
    )


def content_text(content: Any) -> str:
    """Chatbot message content as text (Gradio may hand back a list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content or "")


MAX_BEST_OF = 16


def best_of_answers(settings, cache, history: list[dict], model_id, reward_model_id, n: int, sampling,
                    system_prompt: str | None, viewer) -> tuple[str, str]:
    """(the best answer, an HTML list of all N with their rewards) for the conversation `history`."""
    from llm.best_of_n import best_of_n
    from llm.reward import load_reward_model
    from web import services

    if model_id is None or reward_model_id is None:
        raise ValueError("best-of-N needs a chat model and a reward model (train one in Train ▸ Reward model)")
    with db_session(settings) as session:
        services.get_model(int(model_id), session=session, viewer=viewer)
        services.get_model(int(reward_model_id), session=session, viewer=viewer)
        model_dir, meta = services.model_dir(settings, int(model_id), session=session)
        reward_dir, reward_meta = services.model_dir(settings, int(reward_model_id), session=session)
    if meta["kind"] not in CHAT_KINDS:
        raise ValueError("best-of-N answers in the chat format: choose an SFT or DPO model")
    if reward_meta["tokenizer"] != meta["tokenizer"]:
        raise ValueError(f"the reward model reads tokenizer {reward_meta['tokenizer']!r} and the chat model writes "
                         f"with {meta['tokenizer']!r}: choose models with the same tokenizer")
    policy, tokenizer = cache.get(model_dir)
    scorer = load_reward_model(reward_dir)
    messages = [m for m in history if m["role"] in ("system", "user", "assistant")]
    candidates = best_of_n(policy, tokenizer, messages, scorer, n, sampling, (system_prompt or "").strip() or None)
    items = "".join(f'<li data-reward="{c.reward:.4f}"><code>{c.reward:+.3f}</code> {html.escape(c.text)}</li>'
                    for c in candidates)
    listing = (f'<details class="wb-best-of" open><summary>All {len(candidates)} answers, best first '
               f'(reward model #{int(reward_model_id)})</summary><ol>{items}</ol></details>')
    return candidates[0].text, listing


def thumb_answer(settings, history: list[dict] | None, models: dict | None, index: int, liked: Any,
                 viewer: dict | None) -> str:
    """Store, change or take back `viewer`'s thumb on the answer at `index` of the conversation (liked True: 👍,
    False: 👎, anything else: Gradio's "clicked again", take it back); `models` says which model wrote each answer."""
    from web import services
    from web.services import feedback

    history = [{"role": m.get("role"), "content": content_text(m.get("content"))} for m in (history or [])]
    model_id = (models or {}).get(index, (models or {}).get(str(index)))
    if model_id is None or not 0 < index < len(history) or history[index]["role"] != "assistant":
        return message_html("Thumbs go on a chat model's answers.", "info")
    if viewer is None:
        return message_html("Thumbs are stored per person: log in to give them.", "info")
    conversation = [m for m in history[:index] if m["role"] in ("system", "user", "assistant")]
    answer = history[index]["content"]
    try:
        with db_session(settings) as session:
            user = services.resolve_user(session, int(viewer["id"]))
            if liked in (True, False):
                feedback.give_feedback(session, user, int(model_id), conversation, answer, bool(liked))
                said = "👍 saved" if liked else "👎 saved"
            else:
                feedback.take_back_feedback(session, user, int(model_id), conversation, answer)
                said = "thumb taken back"
    except Exception as error:  # a model deleted meanwhile, a role that may not: say so
        return message_html(error_text(error), "error")
    return f'<div style="font-size:12px;opacity:.7">{html.escape(said)} (model #{int(model_id)})</div>'


@dataclass
class ChatTab:
    settings: Any
    model: gr.Dropdown
    info: gr.HTML
    reward_model: gr.Dropdown

    @property
    def model_outputs(self) -> list:
        """What `show_model` and `refresh_models` update: the model dropdown and its description."""
        return [self.model, self.info]

    def wire(self, blocks: gr.Blocks, page: gr.Tab) -> None:
        blocks.load(self.refresh_models, [self.model], self.model_outputs, api_visibility="private")
        page.select(self.refresh_models, [self.model], self.model_outputs, api_visibility="private")
        for event in (blocks.load, page.select):
            event(self.refresh_reward_models, [self.reward_model], [self.reward_model], api_visibility="private")

    def refresh_reward_models(self, current, request: gr.Request = None):
        """The reward models this user may use for best-of-N (none for labelers: they see chat models only)."""
        from web import services

        viewer = current_user(self.settings, request)
        with db_session(self.settings) as session:
            models = [m for m in services.list_models(session=session, viewer=viewer) if m["kind"] == "reward"]
        choices = [(f"#{m['id']} · {m['name']}", m["id"]) for m in models]
        ids = [value for _, value in choices]
        return gr.Dropdown(choices=choices, value=current if current in ids else (ids[0] if ids else None))

    def refresh_models(self, current, request: gr.Request = None):
        """The models this user may chat with, keeping `current` selected when it still is one."""
        from web import services

        viewer = current_user(self.settings, request)
        with db_session(self.settings) as session:
            models = services.list_models(session=session, viewer=viewer)
        choices = model_choices(models)
        ids = [value for _, value in choices]
        value = current if current in ids else (ids[0] if ids else None)
        info = next((m for m in models if m["id"] == value), None)
        return gr.Dropdown(choices=choices, value=value), model_info_html(info, any_models=bool(models))

    def show_model(self, model_id: int, request: gr.Request = None):
        """Select `model_id` (e.g. a job's new model), with the list refreshed so a new model is in it."""
        return self.refresh_models(model_id, request)


def build(settings) -> ChatTab:
    from web import services
    from web.services.model_cache import shared_cache

    cache = shared_cache(settings.data_dir)

    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            with gr.Row():
                model = gr.Dropdown(label="Model", choices=[], elem_id="chat-model", scale=4)
                reload_models = gr.Button("↻", scale=0, min_width=48, elem_id="chat-reload")
            chatbot = gr.Chatbot(label="Conversation", height=430, elem_id="chat-bot", buttons=["copy"],
                                 placeholder="A base model continues whatever you type as a document: "
                                             "try the first sentence of a paragraph.",
                                 feedback_options=("Like", "Dislike"))
            with gr.Row():
                prompt = gr.Textbox(show_label=False, placeholder="Type a message and press Enter", scale=6,
                                    elem_id="chat-input", lines=1, max_lines=6, autofocus=False)
                send = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="chat-send")
                stop = gr.Button("Stop", variant="stop", scale=1, min_width=80, elem_id="chat-stop")
            with gr.Row():
                clear = gr.Button("Clear conversation", size="sm", elem_id="chat-clear")
            speed = gr.HTML(elem_id="chat-speed")
        with gr.Column(scale=1, min_width=260):
            info = gr.HTML(elem_id="chat-model-info")
            gr.Markdown("#### Sampling")
            temperature = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="Temperature", info="0 = greedy",
                                    elem_id="chat-temperature")
            top_k = gr.Slider(0, 500, value=50, step=1, label="Top-k", info="0 = off", elem_id="chat-top-k")
            top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.01, label="Top-p", info="1 = off",
                              elem_id="chat-top-p")
            max_tokens = gr.Slider(1, 1024, value=200, step=1, label="Max new tokens",
                                   info="capped by the model's context", elem_id="chat-max-tokens")
            seed = gr.Number(value=-1, precision=0, label="Seed", info="-1 = random each time",
                             elem_id="chat-seed")
            stop_at_end = gr.Checkbox(value=True, label="Stop at end of document (<|endoftext|>)",
                                      elem_id="chat-stop-at-end")
            system_prompt = gr.Textbox(value=DEFAULT_SYSTEM_PROMPT, label="System prompt (chat models)", lines=2,
                                       info="sent first in the chat template; base models ignore it",
                                       elem_id="chat-system")
            gr.Markdown("#### Best-of-N")
            best_of = gr.Slider(1, MAX_BEST_OF, value=1, step=1, label="Answers to sample (N)",
                                info="N > 1: a reward model picks the best (chat models)", elem_id="chat-best-of")
            reward_model = gr.Dropdown(label="Reward model", choices=[], elem_id="chat-reward-model")
    candidates = gr.HTML(elem_id="chat-best-of-list")
    answer_models = gr.State({})  # assistant message index -> the chat model that wrote it

    def add_user_message(message: str, history: list[dict] | None):
        history = list(history or [])
        message = (message or "").strip()
        if not message:
            return gr.skip(), history
        history.append({"role": "user", "content": message})
        return "", history

    def respond_streaming(history: list[dict] | None, model_id, temp, k, p, max_new, seed_value, stop_flag,
                          system_value, request: gr.Request = None) -> Iterator[tuple[list[dict], str]]:
        history = [{"role": m.get("role"), "content": content_text(m.get("content"))}
                   for m in (history or [])]
        if not history or history[-1]["role"] != "user":
            yield history, gr.skip()
            return
        if model_id is None:
            history.append({"role": "assistant", "content": f"⚠️ Choose a model first. {NO_MODELS}"})
            yield history, ""
            return
        try:
            settings_ = sampling_settings(max_new, temp, k, p, seed_value, stop_flag)
            with db_session(settings) as session:
                # A model this user may not see (a labeler and a base model) is "not found".
                services.get_model(int(model_id), session=session, viewer=current_user(settings, request))
                model_dir, meta = services.model_dir(settings, int(model_id), session=session)
            started = time.perf_counter()
            loaded_before = cache.loads
            model_obj, tokenizer = cache.get(model_dir)
            load_s = time.perf_counter() - started if cache.loads != loaded_before else 0.0
            prompt_value, stops = render_prompt(meta["kind"], history, tokenizer, system_value)
        except Exception as error:  # a missing file, a bad setting: say so in the conversation
            history.append({"role": "assistant", "content": f"⚠️ {error_text(error)}"})
            yield history, message_html(error_text(error), "error")
            return

        from llm.generate import stream_text

        history.append({"role": "assistant", "content": ""})
        yield history, message_html("generating…", "info")
        text, pieces, last_yield = "", 0, 0.0
        gen_start = time.perf_counter()
        try:
            for delta in stream_text(model_obj, tokenizer, prompt_value, settings_, stop_ids=stops or None):
                text += delta
                pieces += 1
                now = time.perf_counter()
                if now - last_yield >= MIN_YIELD_SECONDS:
                    history[-1]["content"] = text
                    last_yield = now
                    yield history, gr.skip()
        except Exception as error:
            history[-1]["content"] = text + f"\n\n⚠️ {error_text(error)}"
            yield history, message_html(error_text(error), "error")
            return
        elapsed = time.perf_counter() - gen_start
        if not text:
            text = "(the model ended the document at once — try again, or untick “Stop at end of document”)"
        history[-1]["content"] = text
        rate = pieces / elapsed if elapsed > 0 else 0.0
        note = f"{pieces} tokens in {elapsed:.2f} s ({human_count(rate)} tokens/s, CPU)"
        if load_s:
            note += f" · model loaded in {load_s:.2f} s"
        yield history, f'<div style="font-size:12px;opacity:.7">{html.escape(note)}</div>'

    def respond(history: list[dict] | None, model_id, temp, k, p, max_new, seed_value, stop_flag, system_value,
                n, reward_model_id, request: gr.Request = None) -> Iterator[tuple[list[dict], str, str]]:
        """One streamed answer, or with N > 1 the best of N answers by the chosen reward model."""
        if not n or int(n) <= 1:
            for history_, note in respond_streaming(history, model_id, temp, k, p, max_new, seed_value, stop_flag,
                                                    system_value, request):
                yield history_, note, ""
            return
        history = [{"role": m.get("role"), "content": content_text(m.get("content"))} for m in (history or [])]
        if not history or history[-1]["role"] != "user":
            yield history, gr.skip(), gr.skip()
            return
        yield history, message_html(f"sampling {int(n)} answers and scoring them…", "info"), ""
        try:
            best, listing = best_of_answers(settings, cache, history, model_id, reward_model_id, int(n),
                                            sampling_settings(max_new, temp, k, p, seed_value, stop_flag),
                                            system_value, current_user(settings, request))
        except Exception as error:  # no reward model chosen, a base model, mismatched tokenizers: say so
            history.append({"role": "assistant", "content": f"⚠️ {error_text(error)}"})
            yield history, message_html(error_text(error), "error"), ""
            return
        history.append({"role": "assistant", "content": best})
        yield history, "", listing

    def remember_model(history: list[dict] | None, model_id, models: dict | None) -> dict:
        """The model of the newest answer (a model's answer, not a warning), for its thumb."""
        models = dict(models or {})
        history = list(history or [])
        if history and history[-1].get("role") == "assistant" and model_id is not None:
            if not content_text(history[-1].get("content")).startswith("⚠️"):
                models[len(history) - 1] = int(model_id)
        return models

    def thumb(history: list[dict] | None, models: dict | None, data: gr.LikeData, request: gr.Request = None) -> str:
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        return thumb_answer(settings, history, models, int(index), data.liked, current_user(settings, request))

    sampling = [model, temperature, top_k, top_p, max_tokens, seed, stop_at_end, system_prompt, best_of, reward_model]
    submit_event = prompt.submit(add_user_message, [prompt, chatbot], [prompt, chatbot], queue=False,
                                 api_visibility="private").then(
        respond, [chatbot] + sampling, [chatbot, speed, candidates], concurrency_limit=2, concurrency_id="chat",
        show_progress="hidden", api_visibility="private")
    send_event = send.click(add_user_message, [prompt, chatbot], [prompt, chatbot], queue=False,
                            api_visibility="private").then(
        respond, [chatbot] + sampling, [chatbot, speed, candidates], concurrency_limit=2, concurrency_id="chat",
        show_progress="hidden", api_visibility="private")
    for answered in (submit_event, send_event):  # the answer's model, for its thumb (the stop button cancels these)
        answered.then(remember_model, [chatbot, model, answer_models], [answer_models], queue=False,
                      api_visibility="private")
    stop.click(None, None, None, cancels=[submit_event, send_event])
    clear.click(lambda: ([], "", "", {}), None, [chatbot, speed, candidates, answer_models], queue=False,
                api_visibility="private")
    chatbot.like(thumb, [chatbot, answer_models], [speed], queue=False, api_visibility="private")

    tab = ChatTab(settings=settings, model=model, info=info, reward_model=reward_model)

    def on_model_change(model_id, request: gr.Request = None):
        viewer = current_user(settings, request)
        with db_session(settings) as session:
            models = services.list_models(session=session, viewer=viewer)
        return model_info_html(next((m for m in models if m["id"] == model_id), None), any_models=bool(models))

    model.change(on_model_change, [model], [info], queue=False, api_visibility="private")
    reload_models.click(tab.refresh_models, [model], [model, info], queue=False, api_visibility="private")
    return tab
