"""A real browser on the live app: Playwright driving Debian's Chromium (scripts/install_browser.sh installs it).

Loads the page, sorts a column, filters, opens a model's detail, submits a checkpoint, and saves a
screenshot of each step (in $FGVR_SCREENSHOT_DIR when set, else the test's tmp_path).
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is absent: run scripts/install_browser.sh (apt-get install chromium) for the browser test",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package (dev extra) is not installed"
)

from leaderboard.app import serve  # noqa: E402
from leaderboard.queue import SubmissionQueue  # noqa: E402
from leaderboard.store import ResultStore  # noqa: E402
from tests.leaderboard.lb_factories import make_checkpoint, make_summary  # noqa: E402

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 30_000
LONG_NAME = "a-very-long-model-name-" + "x" * 105  # 128 characters
pytestmark = [pytest.mark.browser, pytest.mark.server]


@pytest.fixture
def app_url(tmp_path, monkeypatch):
    root = tmp_path / "submissions"
    root.mkdir()
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_SUBMISSION_ROOT", str(root))
    db_url = f"sqlite:///{tmp_path / 'lb.db'}"
    store = ResultStore.open(db_url)
    store.record_summary(
        make_summary(protocol="foci")
    )  # a reproduced paper row: compared with the reported one
    store.record_summary(
        make_summary(model="paligemma", accuracy=0.571), model_name=LONG_NAME
    )  # 57.1 -> "57.10"
    make_checkpoint(root / "browser-ft")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    blocks = serve(host="127.0.0.1", port=port, db_url=db_url, block=False)
    yield f"http://127.0.0.1:{port}/", store, root
    blocks.close()
    store.close()


def screenshot_dir(tmp_path: Path) -> Path:
    """Where the tests' screenshots go: FGVR_SCREENSHOT_DIR to keep them, else the test's tmp_path."""
    shots = Path(os.environ.get("FGVR_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    return shots


@contextlib.contextmanager
def open_page(url: str):
    """A page of headless Chromium at `url`, closed with its browser on the way out."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            yield page
        finally:
            browser.close()


def first_row(page) -> list[str]:
    return page.locator("#leaderboard-table [role=row]").nth(1).inner_text().split("\n")


def test_browser_sorts_filters_opens_detail_and_submits(app_url, tmp_path):
    url, store, root = app_url
    shots = screenshot_dir(tmp_path)
    with open_page(url) as page:
        table = page.locator("#leaderboard-table")
        table.locator("[role=gridcell]").filter(has_text="76.84").first.wait_for()
        assert first_row(page)[0] == "Finedefics"
        # a 128-character name is cut (its whole self on hover) and leaves room for the scores
        long_cell = table.locator(f'span[title="{LONG_NAME}"]').first
        long_cell.wait_for(state="attached")  # below the fold of the scrolling table
        shown = long_cell.text_content()
        assert shown.endswith("…") and len(shown) < len(LONG_NAME)
        model_header = table.locator("[role=columnheader]").first.bounding_box()
        assert model_header["width"] < 360, model_header
        assert "8.000000" not in table.inner_text()  # numbers that are not accuracies keep their plain form
        table.locator("[role=gridcell]").filter(has_text="57.10").first.wait_for(
            state="attached"
        )  # two decimals
        page.screenshot(path=shots / "leaderboard.png", full_page=True)
        with page.expect_download() as download:
            page.locator("#download-csv").click()
        csv_lines = Path(download.value.path()).read_text().splitlines()
        assert csv_lines[0].startswith("Model,") and csv_lines[1].startswith("Finedefics,")

        # sort: the column menu of Bird-200, ascending -> the lowest Bird-200 accuracy first
        header = table.locator("[role=columnheader]").filter(has_text="Bird-200").first
        header.click()
        header.get_by_role("button", name="Open cell menu").click()
        page.get_by_role("menuitem", name="Sort ascending").first.click()
        rows = table.locator("[role=row]")
        sync_api.expect(rows.nth(1)).to_contain_text("instructblip_flant5")  # 32.15, the lowest

        # filter: the search box, then the source
        search = page.locator("#search textarea, #search input").first
        search.fill("idefics")
        search.press("Enter")
        page.wait_for_function(
            "() => { const rows = [...document.querySelectorAll('#leaderboard-table [role=row]')]"
            ".slice(1); return rows.length === 4 && rows.every(r => r.innerText.includes('Idefics')) }"
        )
        page.locator("#filter-source").get_by_label("reproduced").check()
        sync_api.expect(rows).to_have_count(2)  # the header and the reproduced Idefics2 row
        sync_api.expect(rows.nth(1)).to_contain_text("reproduced")

        # detail: click the row
        rows.nth(1).locator("[role=gridcell]").first.click()
        page.locator("#detail-header").get_by_text("Idefics2").first.wait_for()
        page.locator("#detail-comparison [role=gridcell]").filter(has_text="-0.05").first.wait_for()
        page.screenshot(path=shots / "detail.png", full_page=True)

        # submit a checkpoint from the Submit tab
        page.get_by_role("tab", name="Submit").click()
        page.locator("#submit-model textarea, #submit-model input").first.fill(str(root / "browser-ft"))
        page.locator("#submit-button").click()
        page.locator("#submit-outcome").get_by_text("Queued").wait_for()
        page.screenshot(path=shots / "submit.png", full_page=True)

        # the queue and the plots render too
        page.get_by_role("tab", name="Queue").click()
        page.get_by_role("button", name="Refresh").click()
        page.locator("#queue-table [role=gridcell]").filter(has_text="browser-ft").first.wait_for()
        page.screenshot(path=shots / "queue.png", full_page=True)
        page.get_by_role("tab", name="Plots").click()
        page.locator("#plot-by-dataset .js-plotly-plot").first.wait_for()  # drawn by plotly.js
        page.screenshot(path=shots / "plots.png", full_page=True)
    rows = SubmissionQueue(store).list()
    assert [(row["model_name"], row["status"]) for row in rows] == [("local/web/browser-ft", "PENDING")]
    assert rows[0]["submitter"] == "web-127.0.0.1"
    assert (shots / "leaderboard.png").stat().st_size > 10_000


@pytest.fixture
def comparison_url(tmp_path, monkeypatch):
    from leaderboard.importer import import_path
    from tests.leaderboard.lb_factories import make_comparison_runs

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    db_url = f"sqlite:///{tmp_path / 'lb.db'}"
    store = ResultStore.open(db_url)
    assert import_path(store, make_comparison_runs(tmp_path / "runs")).added == 3
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    blocks = serve(host="127.0.0.1", port=port, db_url=db_url, block=False)
    yield f"http://127.0.0.1:{port}/"
    blocks.close()
    store.close()


def pick(page, dropdown: str, label: str) -> None:
    page.locator(f"{dropdown} input").first.click()
    page.get_by_role("option", name=label, exact=True).first.click()


def test_browser_shows_comparison_derived_intervals_bias_and_library_plots(comparison_url, tmp_path):
    shots = screenshot_dir(tmp_path)
    with open_page(comparison_url) as page:
        page.locator("#leaderboard-table [role=gridcell]").filter(has_text="76.84").first.wait_for()
        # the table flags the run whose answers pile on D
        page.locator("#leaderboard-table").get_by_text("Car-196: D", exact=False).first.wait_for(
            state="attached"
        )

        # paired comparison of two reproduced rows
        page.get_by_role("tab", name="Compare").click()
        pick(page, "#compare-a", "Idefics2 · reproduced (generate)")
        pick(page, "#compare-b", "LLaVA-1.5-7B · reproduced (generate)")
        compared = page.locator("#compare-table [role=gridcell]")
        compared.filter(has_text="paired bootstrap").first.wait_for()
        compared.filter(has_text="A better").first.wait_for()
        page.screenshot(path=shots / "compare.png", full_page=True)

        # position bias, flagged
        page.get_by_role("tab", name="Position bias").click()
        page.locator("#bias-table [role=gridcell]").filter(has_text="⚠ biased: D").first.wait_for()
        page.screenshot(path=shots / "bias.png", full_page=True)

        # a paper row's interval, labelled derived
        page.get_by_role("tab", name="Model detail").click()
        model = page.locator("#detail-model input").first
        model.fill("finedefics")
        model.press("Enter")
        page.locator("#detail-results [role=gridcell]").filter(has_text="(derived)").first.wait_for()
        # the per-class chart of Finedefics' own Stanford Cars run, drawn by plotly
        pick(page, "#class-task", "Car-196")
        page.locator("#plot-per-class .js-plotly-plot").first.wait_for()
        page.screenshot(path=shots / "detail-derived.png", full_page=True)

        page.get_by_role("tab", name="Plots").click()
        page.locator("#plot-by-dataset .js-plotly-plot .main-svg").first.wait_for()
        page.screenshot(path=shots / "plots-plotly.png", full_page=True)
