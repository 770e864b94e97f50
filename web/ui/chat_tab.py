"""Chat tab: pick a model, type, and watch the reply stream in, with the sampling settings at hand.

Generation runs in the web process on the CPU through `web.ui.model_cache` (see that module for
why). The handler is a generator: it yields the conversation with a growing last message for
every text delta `llm.generate.stream_text` produces, and Gradio streams each yield to the browser.

What a "reply" is depends on the model:
  - base model: a document completer. The reply continues the text of your latest message (the
    conversation before it is not sent: a base model has no notion of turns). "Stop at end of
    document" ends the reply where the model closes the document (<|endoftext|>).
  - sft / dpo models whose tokenizer has the chat specials: the whole conversation is rendered
    with <|im_start|>role ... <|im_end|> and the reply stops at <|im_end|>. User text is encoded as
    ordinary text, so a literal "<|im_start|>" typed by a user never becomes a special token.
    (`render_prompt` is the seam where the SFT work plugs in its template.)
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import Any, Iterator

import gradio as gr

from web.ui import db_session, error_text
from web.ui.plots import field, human_count, message_html

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHAT_KINDS = ("sft", "dpo")
MIN_YIELD_SECONDS = 0.02  # at most ~50 browser updates a second, however fast the model is


def model_choices(models: list[dict]) -> list[tuple[str, int]]:
    return [(f"#{field(m, 'id')} · {field(m, 'name')} ({field(m, 'kind')}, {field(m, 'tokenizer')})",
             int(field(m, "id"))) for m in models]


def model_info_html(model: dict | None) -> str:
    if not model:
        return ""
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


def has_chat_specials(tokenizer) -> bool:
    specials = getattr(getattr(tokenizer, "encoding", None), "special_tokens_set", set())
    return IM_START in specials and IM_END in specials


def render_prompt(kind: str, history: list[dict], tokenizer) -> tuple[str | list[int], set[int]]:
    """(prompt, extra stop ids) for a conversation whose last message is the user's.

    Base models (or tokenizers without chat specials) get the latest user message as a document to
    continue. Chat models get the conversation rendered with the chat specials.
    """
    last_user = next((m["content"] for m in reversed(history) if m.get("role") == "user"), "")
    if kind not in CHAT_KINDS or not has_chat_specials(tokenizer):
        return str(last_user), set()
    start, end = tokenizer.special_id(IM_START), tokenizer.special_id(IM_END)
    newline = tokenizer.encode("\n")
    ids: list[int] = []
    for message in history:
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            continue
        ids += [start] + tokenizer.encode(f"{role}\n{content}") + [end] + newline
    ids += [start] + tokenizer.encode("assistant\n")
    return ids, {end}


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


@dataclass
class ChatTab:
    settings: Any
    model: gr.Dropdown
    info: gr.HTML

    def wire(self, blocks: gr.Blocks, page: gr.Tab) -> None:
        blocks.load(self.refresh_models, [self.model], [self.model, self.info], api_visibility="private")
        page.select(self.refresh_models, [self.model], [self.model, self.info], api_visibility="private")

    def refresh_models(self, current):
        from web import services

        with db_session(self.settings) as session:
            models = services.list_models(session=session)
        choices = model_choices(models)
        ids = [value for _, value in choices]
        value = current if current in ids else (ids[0] if ids else None)
        info = next((m for m in models if m["id"] == value), None)
        return gr.Dropdown(choices=choices, value=value), model_info_html(info)


def build(settings) -> ChatTab:
    from web import services
    from web.ui.model_cache import shared_cache

    cache = shared_cache(settings.data_dir)

    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            with gr.Row():
                model = gr.Dropdown(label="Model", choices=[], elem_id="chat-model", scale=4)
                reload_models = gr.Button("↻", scale=0, min_width=48, elem_id="chat-reload")
            chatbot = gr.Chatbot(label="Conversation", height=430, elem_id="chat-bot", buttons=["copy"],
                                 placeholder="A base model continues whatever you type as a document: "
                                             "try the first sentence of a paragraph.",
                                 feedback_options=None)
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

    def add_user_message(message: str, history: list[dict] | None):
        history = list(history or [])
        message = (message or "").strip()
        if not message:
            return gr.skip(), history
        history.append({"role": "user", "content": message})
        return "", history

    def respond(history: list[dict] | None, model_id, temp, k, p, max_new, seed_value, stop_flag
                ) -> Iterator[tuple[list[dict], str]]:
        history = [{"role": m.get("role"), "content": content_text(m.get("content"))}
                   for m in (history or [])]
        if not history or history[-1]["role"] != "user":
            yield history, gr.skip()
            return
        if model_id is None:
            history.append({"role": "assistant", "content": "⚠️ Choose a model first (train one in Train ▸ Pretrain)."})
            yield history, ""
            return
        try:
            settings_ = sampling_settings(max_new, temp, k, p, seed_value, stop_flag)
            with db_session(settings) as session:
                model_dir, meta = services.model_dir(settings, int(model_id), session=session)
            started = time.perf_counter()
            loaded_before = cache.loads
            model_obj, tokenizer = cache.get(model_dir)
            load_s = time.perf_counter() - started if cache.loads != loaded_before else 0.0
            prompt_value, stops = render_prompt(meta["kind"], history, tokenizer)
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

    sampling = [model, temperature, top_k, top_p, max_tokens, seed, stop_at_end]
    submit_event = prompt.submit(add_user_message, [prompt, chatbot], [prompt, chatbot], queue=False,
                                 api_visibility="private").then(
        respond, [chatbot] + sampling, [chatbot, speed], concurrency_limit=2, concurrency_id="chat",
        show_progress="hidden", api_visibility="private")
    send_event = send.click(add_user_message, [prompt, chatbot], [prompt, chatbot], queue=False,
                            api_visibility="private").then(
        respond, [chatbot] + sampling, [chatbot, speed], concurrency_limit=2, concurrency_id="chat",
        show_progress="hidden", api_visibility="private")
    stop.click(None, None, None, cancels=[submit_event, send_event])
    clear.click(lambda: ([], ""), None, [chatbot, speed], queue=False, api_visibility="private")

    tab = ChatTab(settings=settings, model=model, info=info)

    def on_model_change(model_id):
        with db_session(settings) as session:
            models = services.list_models(session=session)
        return model_info_html(next((m for m in models if m["id"] == model_id), None))

    model.change(on_model_change, [model], [info], queue=False, api_visibility="private")
    reload_models.click(tab.refresh_models, [model], [model, info], queue=False, api_visibility="private")
    return tab
