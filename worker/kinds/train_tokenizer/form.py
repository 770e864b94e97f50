"""The `train_tokenizer` kind's own part of its Train sub-tab (web/ui/train_tab.py builds the rest): the
tokenizers Pretrain can use now, listed under the fields so a name already taken is seen before submit."""

from __future__ import annotations

from html import escape

from web.ui.train_tab import Notes


def tokenizers_html(tokenizers: list[dict]) -> str:
    """The tokenizers Pretrain can use now: name, built-in or trained, vocabulary size."""
    items = [f"<b>{escape(t['name'])}</b> ({escape(t.get('kind', 'builtin'))}, "
             + (f"{t['vocab_size']:,} tokens)" if isinstance(t.get("vocab_size"), int) else "size unknown)")
             for t in tokenizers]
    return ('<div id="tok-list" style="font-size:13px">Tokenizers available to Pretrain: '
            + "; ".join(items) + "</div>")


def existing_tokenizers(settings) -> str:
    from llm.tokenizer import list_tokenizers

    return tokenizers_html(list_tokenizers(settings.data_dir))


NOTES = Notes("existing", existing_tokenizers)
