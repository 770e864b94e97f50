"""Each step of `clean` (llm/clean.py) on small hand-made documents that must pass and must fail: the language filter
(llm/language_filter.py), the URL block list and the HTML extractor (llm/clean_blocks.py), datatrove's Gopher, C4 and
FineWeb filters at the settings `clean` gives them, and the PII formatter."""

from __future__ import annotations

import random

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter)

from llm.clean_blocks import CleanStopped, CountingPIIFormatter, HtmlExtractor, UrlBlockFilter, Watch, parse_domains
from llm.language_filter import LanguageFilter, identify
from llm.synthetic_web import COOKIE, FOOTER, article_html, english_text, foreign_text, menu_text, spam_text

PROSE = english_text(random.Random(0), 24)


def doc(text: str, **metadata) -> Document:
    return Document(text=text, id="test", metadata=metadata)


def passes(block, text: str, **metadata) -> bool:
    result = block.filter(doc(text, **metadata))
    return result is True or (isinstance(result, tuple) and result[0])


def reason(block, text: str, **metadata) -> str:
    result = block.filter(doc(text, **metadata))
    assert isinstance(result, tuple) and not result[0], f"expected {block} to remove the document, got {result}"
    return result[1]


def test_language_filter_keeps_english_and_removes_other_languages_with_their_name():
    english = LanguageFilter("en", 0.65)
    assert passes(english, PROSE)
    assert reason(english, foreign_text(random.Random(1), "fr")) == "fr, not en"
    assert reason(english, foreign_text(random.Random(1), "de")) == "de, not en"
    # A page in no clear language (a menu) is under the threshold for every language.
    assert reason(english, "Home\nNews\nLogin\n42\nShop") == "language score below threshold"
    # Keeping French instead: the French page passes, the English one does not.
    french = LanguageFilter("fr", 0.65)
    assert passes(french, foreign_text(random.Random(1), "fr"))
    assert reason(french, PROSE) == "en, not fr"
    assert identify("Der Ausschuss trifft sich am nächsten Dienstag.")[0] == "de"


def test_language_filter_threshold_is_the_score_of_the_kept_language():
    page = doc(PROSE)
    assert LanguageFilter("en", 0.65).filter(page) is True
    assert page.metadata["language"] == "en" and page.metadata["language_score"] >= 0.65
    assert LanguageFilter("en", 1.01).filter(doc(PROSE)) == (False, "language score below threshold")


def test_url_block_list_removes_listed_domains_and_subdomains_and_lets_pages_without_url_through():
    block = UrlBlockFilter(parse_domains("# mine\nbad-site.org, https://www.worse.net/path\n"))
    assert reason(block, PROSE, url="https://bad-site.org/a") == "domain"
    assert reason(block, PROSE, url="https://news.bad-site.org/a") == "domain"
    assert reason(block, PROSE, url="http://worse.net/") == "domain"
    assert reason(block, PROSE, url="https://example-spam.com/x") == "domain"  # the shipped list
    assert reason(block, PROSE, url="https://good.example.org/xxx-videos") == "hard_blacklisted"  # banned words
    assert passes(block, PROSE, url="https://good.example.org/news/1")
    assert passes(block, PROSE)  # plain text has no URL: nothing to block


def test_html_extractor_keeps_the_article_and_drops_menus_cookie_banners_and_footers():
    rng = random.Random(2)
    body = english_text(rng, 20)
    pages = [doc(article_html(rng, body), format="html"), doc("already plain text", format="text"),
             doc("<html><head><title>x</title><script>var a = 1;</script></head><body></body></html>", format="html"),
             doc("<html><body><p>unclosed <div><b>broken <<>> html &nbsp", format="html")]
    extractor = HtmlExtractor(timeout=30)
    kept = list(extractor.run(iter(pages)))
    article = kept[0].text
    assert body.split("\n")[0][:60] in article
    for boilerplate in (COOKIE[:30], FOOTER[:30], "About us", "Most read", "tracking"):
        assert boilerplate not in article
    assert kept[1].text == "already plain text"  # plain text is not extracted
    # The page without a body has no main text: removed with its reason. Broken HTML does not stop the run (what
    # trafilatura makes of it goes on to the quality rules).
    assert [page.id for page in kept].count("test") in (3, 4) and "var a" not in " ".join(p.text for p in kept)
    assert extractor.stats.stats["dropped_no main text"].total >= 1


def test_gopher_repetition_removes_repeated_lines_and_keeps_prose():
    block = GopherRepetitionFilter()
    assert passes(block, PROSE)
    assert reason(block, spam_text(random.Random(3))) in ("dup_line_frac", "dup_line_char_frac", "top_2_gram",
                                                          "duplicated_5_n_grams")


def test_gopher_quality_removes_short_and_symbol_heavy_pages():
    block = GopherQualityFilter()
    assert passes(block, PROSE)
    assert reason(block, "Too short to be a page.") == "gopher_short_doc"
    assert reason(block, " ".join(["#tag"] * 60 + ["the", "and"] * 10)) in ("gopher_too_many_hashes",
                                                                             "gopher_below_alpha_threshold")
    # No English stop words at all.
    assert reason(block, " ".join(["zebra", "quartz", "violin", "mango"] * 20)) == "gopher_enough_stop_words"


def test_c4_rules_remove_lorem_ipsum_and_curly_brackets_and_keep_prose():
    block = C4QualityFilter(filter_no_terminal_punct=False)
    assert passes(block, PROSE)
    assert reason(block, "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 10) == "lorem_ipsum"
    assert reason(block, PROSE + "\nfunction f() { return 1; }") == "curly_bracket"
    assert reason(block, "One line only. It has words.") == "too_few_sentences"


def test_fineweb_line_rules_remove_menu_like_pages_and_keep_prose():
    block = FineWebQualityFilter()
    assert passes(block, PROSE)
    assert reason(block, menu_text(random.Random(4))) in ("line_punct_ratio", "short_line_ratio")
    dup = "\n".join([english_text(random.Random(5), 4)] + ["This same line repeats on the page, again."] * 30)
    assert reason(block, dup) in ("char_dup_ratio", "line_punct_ratio", "short_line_ratio")


def test_pii_replaces_emails_and_public_ips_but_not_private_ones():
    formatter = CountingPIIFormatter()
    page = doc("Write to jane.doe@company.com or ping 8.8.4.4; the router is 192.168.1.1.")
    [out] = list(formatter.run(iter([page])))
    assert "jane.doe@company.com" not in out.text and "8.8.4.4" not in out.text
    assert "192.168.1.1" in out.text and "@example" in out.text
    assert formatter.stats.stats["documents_changed"].total == 1


def test_watch_stops_a_task_when_the_stop_file_appears(tmp_path):
    stop = tmp_path / "STOP"
    watch = Watch(str(tmp_path / "progress"), str(stop))
    documents = (doc(f"d{i}") for i in range(200))
    stream = watch.run(documents, rank=3)
    assert next(stream).text == "d0"
    assert (tmp_path / "progress" / "00003").read_text() == "0"
    stop.touch()
    with pytest.raises(CleanStopped):
        list(stream)
