"""The few datatrove pipeline steps of our own that `llm.clean` puts between datatrove's blocks.

  Watch          first step of a stage: writes how many documents this task has read (the progress the job
                 shows) and stops the task when the run's stop file appears (cancel; the task is not marked
                 complete, so a resumed run does it again)
  Meter          counts the documents and UTF-8 bytes that reach it: the report's "in/out" per step
  KeptSample     writes the first few documents that passed a step: the report's kept examples
  UrlBlockFilter datatrove's URLFilter with our shipped list (llm/data/url_blocklist.txt) and the user's domains, offline (tldextract's bundled suffix list, never a download) and letting
                 pages without a URL through (plain text has none) instead of failing an assertion
  HtmlExtractor  datatrove's Trafilatura extractor for documents read as HTML only (plain text passes), which
                 writes what it removes (nothing extracted, timed out, extractor error) like a filter does
  CountingPIIFormatter  datatrove's PII formatter, counting the documents it changed

Every step keeps datatrove's interface (`run(data, rank, world_size)`), so the pipeline runs unchanged on datatrove's
Slurm or Ray executors.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.extractors.base import ExtractorSandbox
from datatrove.pipeline.filters import URLFilter
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.typeshelper import StatHints

PROGRESS_EVERY = 50        # documents between two progress writes / stop checks
SHIPPED_BLOCKLIST = Path(__file__).with_name("data") / "url_blocklist.txt"


class CleanStopped(RuntimeError):
    """The run was asked to stop (its stop file exists)."""


class Watch(PipelineStep):
    type = "👀 - WATCH"
    name = "progress and stop"

    def __init__(self, progress_dir: str, stop_file: str):
        super().__init__()
        self.progress_dir, self.stop_file = progress_dir, stop_file

    def _write(self, rank: int, count: int) -> None:
        os.makedirs(self.progress_dir, exist_ok=True)
        path = os.path.join(self.progress_dir, f"{rank:05d}")
        with open(path + ".tmp", "w") as handle:
            handle.write(str(count))
        os.replace(path + ".tmp", path)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        count = 0
        for document in data:
            if count % PROGRESS_EVERY == 0:
                if os.path.exists(self.stop_file):
                    raise CleanStopped("stopped")
                self._write(rank, count)
            count += 1
            yield document
        self._write(rank, count)


class Meter(PipelineStep):
    type = "📏 - METER"

    def __init__(self, step: str):
        self.name = step  # before PipelineStep.__init__, which names the step's stats after it
        super().__init__()

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for document in data:
            self.stat_update("documents")
            self.stat_update("bytes", value=len(document.text.encode("utf-8", errors="replace")))
            yield document


class KeptSample(PipelineStep):
    type = "🔎 - SAMPLE"

    def __init__(self, folder: str, step: str, limit: int):
        self.name = step  # before PipelineStep.__init__, which names the step's stats after it
        super().__init__()
        self.folder, self.limit = folder, limit

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        written = 0
        handle = None
        try:
            for document in data:
                if written < self.limit:
                    if handle is None:
                        os.makedirs(self.folder, exist_ok=True)
                        handle = open(os.path.join(self.folder, f"{rank:05d}.jsonl"), "w", encoding="utf-8")
                    handle.write(json.dumps({"id": document.id, "text": document.text[:2000],
                                             "url": document.metadata.get("url")}, ensure_ascii=False) + "\n")
                    written += 1
                yield document
        finally:
            if handle is not None:
                handle.close()


def parse_domains(text: str) -> list[str]:
    """Domains from a block list: one per line or separated by spaces/commas; `#` starts a comment."""
    domains = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for part in line.replace(",", " ").split():
            part = part.strip().lower().removeprefix("http://").removeprefix("https://").split("/", 1)[0]
            if part:
                domains.append(part.removeprefix("www."))
    return domains


class UrlBlockFilter(URLFilter):
    name = "😈 URL block list"

    def __init__(self, domains: list[str], use_integrated_lists: bool = False, exclusion_writer: DiskWriter = None):
        from datatrove.utils._import_utils import ASSETS_PATH
        from tldextract import TLDExtract

        # The banned words of datatrove's URL filter ship as small files: use them with or without the UT1 list.
        def words(name: str) -> list[str]:
            with open(os.path.join(ASSETS_PATH, name)) as handle:
                return [line.strip() for line in handle if line.strip()]

        domains = parse_domains(SHIPPED_BLOCKLIST.read_text(encoding="utf-8")) + list(domains)
        super().__init__(extra_domains=domains,
                         banned_words=None if use_integrated_lists else words("banned_words.txt"),
                         banned_subwords=None if use_integrated_lists else words("banned_subwords.txt"),
                         soft_banned_words=None if use_integrated_lists else words("soft_banned_words.txt"),
                         use_integrated_lists=use_integrated_lists, exclusion_writer=exclusion_writer)
        # tldextract fetches the public suffix list from the internet unless told not to: use its bundled copy.
        self.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)

    def filter(self, document) -> bool | tuple[bool, str]:
        if not document.metadata.get("url"):
            return True
        return super().filter(document)


def _exit_cleanly_on_sigterm() -> None:
    """In a pool worker (LocalPipelineExecutor with workers > 1), the SIGTERM of the pool's terminate() (a stopped or
    failed stage) kills the worker without running the extractor sandbox's cleanup, and the sandbox process was left
    behind (seen after a cancel: an orphan holding 70 MB and the run's output pipe). Make it an exit that unwinds.
    Never in the main process (a worker's or the CLI's own signal handling stays theirs)."""
    import signal
    import sys
    import threading

    import multiprocess

    if multiprocess.current_process().name == "MainProcess" or threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class HtmlExtractor(Trafilatura):
    name = "⛏ Trafilatura (HTML pages only)"

    def __init__(self, timeout: float, exclusion_writer: DiskWriter = None):
        # Import here, in the process that builds the pipeline: a broken install (trafilatura 2 needs
        # lxml_html_clean) is then one clear error, not every page "timed out" in the extractor's sandbox process.
        importlib.import_module("trafilatura")

        super().__init__(favour_precision=True, timeout=timeout)
        self.exclusion_writer = exclusion_writer

    def _removed(self, writer, document, reason: str, rank: int) -> None:
        self.stat_update(StatHints.dropped)
        self.stat_update(f"dropped_{reason}")
        if writer is not None:
            document.metadata["filter_reason"] = reason
            writer.write(document, rank)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import contextlib

        _exit_cleanly_on_sigterm()
        with (self.exclusion_writer or contextlib.nullcontext()) as writer, \
                ExtractorSandbox(timeout=self.timeout, warmup_text="") as sandbox:
            for document in data:
                if document.metadata.get("format") != "html":
                    yield document
                    continue
                self.stat_update(StatHints.total)
                started = time.perf_counter()
                try:
                    html = document.text
                    text = sandbox.process_document(html, self.extract)
                except TimeoutError:
                    self._removed(writer, document, "extraction timed out", rank)
                    continue
                except EOFError:
                    self._removed(writer, document, "extractor process died", rank)
                    continue
                except Exception:  # trafilatura raised on this page
                    self._removed(writer, document, "extractor error", rank)
                    continue
                finally:
                    self.stats.time_stats.update(time.perf_counter() - started)
                if not text or not text.strip():
                    self._removed(writer, document, "no main text", rank)
                    continue
                document.text = text
                document.metadata["format"] = "text"
                self.stat_update(StatHints.forwarded)
                yield document


class CountingPIIFormatter(PIIFormatter):
    """datatrove's PII formatter (e-mails and public IPs replaced), counting the documents it changed."""

    name = "📞 PII (e-mails, public IPs)"

    def format(self, text: str) -> str:
        replaced = super().format(text)
        if replaced != text:
            self.stat_update("documents_changed")
        return replaced
