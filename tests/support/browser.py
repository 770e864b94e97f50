"""The browser tests' helpers: `workbench serve` in a subprocess for a module's tests (`Server`), the
Chromium they drive, the test data they upload, and page helpers (open a tab, fill a number, pick in a dropdown,
upload a dataset, submit a Train form and wait for its job)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.processes import free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ADMIN_PASSWORD = "e2e-" + os.urandom(6).hex()
SERVER_START_TIMEOUT_S = 180
JOB_TIMEOUT_S = 420
SCREENSHOT = REPO / "docs" / "screenshot.png"


# ----------------------------------------------------------------------------- test data

SUBJECTS = ["The old miller", "A young painter", "The village baker", "Our neighbour", "The river",
            "A quiet student", "The ship's captain", "My grandmother", "The small dog", "The gardener"]
VERBS = ["walked", "looked", "waited", "worked", "sang", "listened", "wandered", "talked", "rested", "smiled"]
PLACES = ["by the window", "near the bridge", "in the market", "under the tall trees", "along the shore",
          "at the edge of town", "behind the old mill", "in the warm kitchen", "on the hill", "beside the road"]
TAILS = ["while the rain kept falling.", "until the evening light was gone.", "and nobody said a word.",
         "because the morning was cold.", "as the bells rang in the distance.", "and thought about the summer.",
         "with a basket of bread and apples.", "before the market closed for the day."]


def make_corpus(path: Path, documents: int = 200, seed: int = 7) -> list[str]:
    """~200 short English-like paragraphs separated by blank lines (+ two exact duplicates)."""
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(documents):
        sentences = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(PLACES)} {rng.choice(TAILS)}"
                     for _ in range(rng.randint(2, 5))]
        paragraphs.append(" ".join(sentences))
    paragraphs += paragraphs[:2]  # duplicates the upload should report as removed
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return paragraphs


# ----------------------------------------------------------------------------- the server

def processes_with_env(marker: str) -> list[int]:
    """Pids of processes whose environment contains `marker` (our unique data dir): the server's family."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except (OSError, PermissionError):
            continue
    return found


class Server:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = data_dir.parent / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
        env.update(WORKBENCH_DATA_DIR=str(data_dir), WORKBENCH_ADMIN_PASSWORD=ADMIN_PASSWORD,
                   WORKBENCH_DEVICE="cpu", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
        self.marker = f"WORKBENCH_DATA_DIR={data_dir}"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "serve", "--port", str(self.port), "--data-dir", str(data_dir)],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"workbench serve exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"workbench serve not ready after {SERVER_START_TIMEOUT_S}s:\n{self.log()[-4000:]}")

    def stop(self) -> list[int]:
        """SIGTERM, wait, then SIGKILL the group; returns pids of the family that had to be killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # The worker and Redis run in their own sessions; serve stops them, and they die with it
        # (PDEATHSIG). Give them a moment, then kill whatever still carries our data dir.
        deadline = time.monotonic() + 20
        leftovers = processes_with_env(self.marker)
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.5)
            leftovers = processes_with_env(self.marker)
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()
        return leftovers


# ----------------------------------------------------------------------------- page helpers

def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).first.click()


def fill_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Tab")  # commit (Gradio's Number fires change on blur/enter)


def text_of(page, selector: str) -> str:
    return page.locator(selector).first.inner_text()


def choose(page, elem_id: str, option: str, exact: bool = True) -> None:
    """Pick `option` (or the first option containing it, with exact=False) in a Gradio dropdown."""
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=exact).first.click()


def pick(page, elem_id: str, option: str) -> None:
    """Choose the first option containing `option` in a dropdown and make sure it stays chosen: opening a tab
    refreshes its dropdowns, and under load that answer can land after a pick made right away."""
    page.wait_for_timeout(1500)
    for _ in range(3):
        choose(page, elem_id, option, exact=False)
        page.wait_for_timeout(500)
        if option in (page.locator(f"#{elem_id} input").first.input_value() or ""):
            return
    raise AssertionError(f"{option!r} did not stay chosen in #{elem_id}")


def upload_dataset(page, path: Path, name: str, kind: str) -> None:
    """Upload `path` in the Datasets tab as a dataset `name` of `kind`; the upload must be stored."""
    open_tab(page, "Datasets")
    field = page.locator("#ds-file")
    if field.locator("input[type=file]").count() == 0:  # the previous upload's file is still shown
        field.get_by_role("button", name="Clear").first.click()
    field.locator("input[type=file]").set_input_files(str(path))
    page.locator("#ds-name input, #ds-name textarea").first.fill(name)
    choose(page, "ds-kind", kind)
    page.locator("#ds-upload").click()
    page.locator("#ds-message").filter(has_text=f"“{name}”").wait_for(timeout=60_000)
    assert page.locator("#ds-message .wb-msg-ok").count() == 1, text_of(page, "#ds-message")


def submit_and_wait(page, server, prefix: str) -> int:
    """Submit a Train form; the page moves to Jobs, where the job must succeed. Returns its id."""
    page.locator(f"#{prefix}-submit").click()
    result = page.locator(f"#{prefix}-result .wb-msg-ok")
    result.wait_for(state="attached", timeout=60_000)
    job_id = int(re.search(r"Job #(\d+)", result.text_content()).group(1))
    page.get_by_role("tab", name="Jobs", exact=True).and_(page.locator("[aria-selected=true]")).wait_for()
    wait_for_job(page, server, job_id)
    return job_id


def wait_for_job(page, server, job_id: int) -> None:
    """Watch the Jobs tab's detail header until the job ends; it must succeed."""
    page.locator(f"#jobs-queue tr[data-job='{job_id}']").wait_for()
    page.locator("#jobs-detail-header .wb-job-head").filter(has_text=f"Job #{job_id}").wait_for()
    started = time.monotonic()
    status = None
    while time.monotonic() < started + JOB_TIMEOUT_S:
        status = page.locator("#jobs-detail-header .wb-job-head").first.get_attribute("data-status")
        if status in ("succeeded", "failed", "cancelled"):
            break
        page.wait_for_timeout(1000)
    if status != "succeeded":  # what went wrong first, short: a long report is cut in the middle by CI's excerpt
        job_log = page.locator('#jobs-logs textarea').input_value().splitlines()
        server_log = [line for line in server.log().splitlines() if not line.startswith("INFO:     127.0.0.1")]
        raise AssertionError(f"job {job_id} ended {status} after {time.monotonic() - started:.0f} s; error: "
                             f"{text_of(page, '#jobs-error')!r}\n--- the job log's end:\n" + "\n".join(job_log[-15:])
                             + "\n--- serve's log (requests left out), its end:\n" + "\n".join(server_log[-25:]))


def write_chat_data(path: Path, conversations: int = 60, seed: int = 5) -> None:
    """Short conversations in the OpenAI `messages` format: a greeting and a fixed-shape answer."""
    import json

    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        for _ in range(conversations):
            subject = rng.choice(SUBJECTS)
            messages = [{"role": "user", "content": f"Where is {subject.lower()}?"},
                        {"role": "assistant", "content": f"{subject} {rng.choice(VERBS)} {rng.choice(PLACES)}."}]
            out.write(json.dumps({"messages": messages}) + "\n")


def log_in(page, url: str, password: str) -> None:
    page.goto(url)
    page.get_by_label("username").fill("admin")
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    page.locator("#wb-whoami").filter(has_text="admin").wait_for(timeout=60_000)


