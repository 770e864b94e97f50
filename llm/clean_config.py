"""`CleanConfig`: the steps of the `clean` job (`llm.clean.clean`) and their thresholds, declared once here
(`llm.params.setting`) for the worker's `clean` kind, its Train form and `workbench clean`. Imports no torch and no
datatrove: the web process reads the declaration cheaply.

The defaults are FineWeb's (datatrove's examples/fineweb.py): URL block list → trafilatura in precision mode →
language score ≥ 0.65 → Gopher repetition and quality → C4 (without its terminal-punctuation rule) → FineWeb's
line rules (line punctuation 0.12, short lines 0.67, duplicated characters 0.01, newlines per word 0.3) → MinHash
on 5-grams, 14 buckets × 8 hashes → e-mails and public IP addresses replaced. Two departures, each said in its help:
the URL block list is a small one shipped with the workbench (FineWeb's 18 MB UT1 list is one switch away), and the
extraction timeout is 5 s instead of datatrove's 1 s (a busy machine took over a second to start the extractor).
"""

from __future__ import annotations

from dataclasses import dataclass

from llm.params import setting

# The steps in the order the pipeline runs them: (config switch, name in the report, what it does).
STEPS = (
    ("url_filter", "url", "URL block list"),
    ("extract_html", "extract", "HTML → text (trafilatura, precision)"),
    ("language_filter", "language", "language identification"),
    ("gopher_repetition", "gopher_repetition", "Gopher repetition rules"),
    ("gopher_quality", "gopher_quality", "Gopher quality rules"),
    ("c4_rules", "c4", "C4 rules"),
    ("fineweb_rules", "fineweb", "FineWeb line rules"),
    ("minhash", "minhash", "MinHash near-duplicates"),
    ("pii", "pii", "PII replaced (e-mails, public IPs)"),
)


@dataclass
class CleanConfig:
    # URL block list
    url_filter: bool = setting(True, help="remove pages whose URL is on the block list (pages without a URL pass)")
    blocked_domains: str | None = setting(None, type="str", max_length=200_000, help="more domains to block, separated by spaces, "
                                   "commas or new lines (added to the list shipped with the workbench)")
    fineweb_url_blocklist: bool = setting(False, advanced=True,
                                          help="also use FineWeb's full UT1 block list shipped inside datatrove "
                                               "(4.6 million domains: about 15 s and 0.5 GB more per worker to "
                                               "load; 119 MB extracted to the Hugging Face cache)")
    # HTML / WARC -> text
    extract_html: bool = setting(True, help="extract the main text of HTML pages with trafilatura (precision "
                                            "mode): menus, cookie banners and footers go")
    extraction_timeout: float = setting(5.0, minimum=0.1, maximum=600, advanced=True,
                                        help="seconds one page may take to extract before it is removed as "
                                             "timed out (datatrove's default is 1 s)")
    # language
    language_filter: bool = setting(True, help="keep pages in one language (fastText lid.176, offline)")
    language: str = setting("en", max_length=8, help="the language to keep (ISO 639-1 code: en, fr, de, ...)")
    language_threshold: float = setting(0.65, minimum=0, maximum=1,
                                        help="the lowest language score a kept page may have")
    # quality rules
    gopher_repetition: bool = setting(True, help="Gopher's repetition rules (duplicated lines, paragraphs, "
                                                 "n-grams)")
    gopher_quality: bool = setting(True, help="Gopher's quality rules (word count and length, symbols, bullets, "
                                              "stop words)")
    c4_rules: bool = setting(True, help="C4's rules (lines of 3+ words, 5+ sentences, no javascript, lorem "
                                        "ipsum or curly brackets; cookie and policy lines dropped)")
    fineweb_rules: bool = setting(True, help="FineWeb's line rules (the four thresholds below)")
    line_punctuation_ratio: float = setting(0.12, minimum=0, maximum=1, advanced=True,
                                            help="remove a page when at most this share of its lines end in "
                                                 "punctuation")
    short_line_ratio: float = setting(0.67, minimum=0, maximum=1, advanced=True,
                                      help="remove a page when more than this share of its lines are short "
                                           "(≤ 30 characters)")
    duplicate_chars_ratio: float = setting(0.01, minimum=0, maximum=1, advanced=True,
                                           help="remove a page when more than this share of its characters are "
                                                "in duplicated lines")
    newlines_per_word: float = setting(0.3, minimum=0, maximum=10, advanced=True,
                                       help="remove a page with more new lines per word than this")
    # near-duplicates
    minhash: bool = setting(True, help="remove near-duplicate pages (MinHash, one page kept per cluster)")
    minhash_ngrams: int = setting(5, minimum=1, maximum=50, advanced=True, help="words per shingle")
    minhash_buckets: int = setting(14, minimum=1, maximum=200, advanced=True, help="LSH buckets")
    minhash_hashes_per_bucket: int = setting(8, minimum=1, maximum=100, advanced=True, help="hashes per bucket")
    # PII
    pii: bool = setting(True, help="replace e-mail addresses and public IP addresses with placeholders")
    # limits and the report
    max_document_bytes: int = setting(2_000_000, minimum=1000, maximum=1_000_000_000, advanced=True,
                                      help="a page or document larger than this is removed as too long before "
                                           "any other step")
    examples_per_reason: int = setting(5, minimum=0, maximum=100, advanced=True,
                                       help="removed and kept documents the report shows per step and reason")
    keep_removed: bool = setting(False, advanced=True,
                                 help="keep every removed document (datatrove's exclusion files) with the "
                                      "dataset, not only the report's examples")

    def step_enabled(self, switch: str) -> bool:
        return bool(getattr(self, switch))
