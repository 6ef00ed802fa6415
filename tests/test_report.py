"""`nba replay --report`: one self-contained page, checked in a real browser (headless Chromium)."""

from __future__ import annotations

import io
import json
import re
import shutil

import pytest

from nba.engine.replay import replay

from dsl_helpers import T0, engine_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

RULES = """
rule shoes
  priority 50
  when event.type == "page_view" and event.category == "shoes"
  then shoe_banner via web
  cap 2 per 1h
end
rule mail
  priority 40
  when event.type == "page_view" and event.category == "bags"
  then bag_mail via email
  holdout 30%
end
rule never
  priority 60
  when event.type == "page_view" and event.price > 1000
  then luxury via web
end
default recommendations via web
"""


def write_report(tmp_path, n_events: int) -> tuple[str, str]:
    events = tmp_path / "events.jsonl"
    with events.open("w", encoding="utf-8") as out:
        for i in range(n_events):
            category = ("shoes", "bags", "hats")[i % 3]
            out.write(
                json.dumps(
                    {
                        "customer_id": f"c{i % 50}",
                        "type": "page_view",
                        "category": category,
                        "price": i % 900,
                        "time": T0 + i * 7,
                    }
                )
                + "\n"
            )
    page = tmp_path / "report.html"
    err = io.StringIO()
    code = replay(engine_for(RULES), str(events), io.StringIO(), err, report=str(page), rules_path="rules/")
    assert code == 0
    return page.read_text(encoding="utf-8"), str(page)


def test_the_report_is_self_contained_and_shows_what_the_contract_lists(tmp_path):
    text, _ = write_report(tmp_path, 600)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # nothing fetched
    assert "<script" not in text and "@import" not in text and "url(" not in text
    for heading in ("Decisions over event time", "Channel mix", "Rules", "Never chosen", "Holdouts"):
        assert heading in text
    assert "<code>never</code>: never chosen in 600 events; <code>event.price &gt; 1000</code> false in 100%" in text


def test_a_long_replay_draws_no_more_bars_than_a_short_one(tmp_path):
    short, _ = write_report(tmp_path, 300)
    long, _ = write_report(tmp_path, 30_000)
    chart = re.compile(r'aria-label="decisions over event time">(.*?)</svg>', re.S)
    bars = [len(re.findall("<rect", chart.search(text).group(1))) for text in (short, long)]
    assert bars[1] <= 5 * 120  # at most MAX_BINS bins of at most five layers each
    assert len(long) < 3 * len(short) + 50_000


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (scripts/test.sh installs Debian's chromium)")
def test_the_report_opens_in_a_browser_with_no_error_no_request_and_drawn_charts(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from PIL import Image

    _, path = write_report(tmp_path, 2_000)
    requests, problems = [], []
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(f"file://{path}")
            sizes = page.eval_on_selector_all(
                "svg.chart",
                "charts => charts.map(c => [c.getBoundingClientRect().width, c.getBoundingClientRect().height])",
            )
            shot = page.locator("svg.chart").first.screenshot()
        finally:
            browser.close()
    assert requests == [f"file://{path}"], requests  # the page itself, nothing else
    assert problems == []
    assert len(sizes) == 2 and all(width > 300 and height > 50 for width, height in sizes), sizes
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    drawn = sum(count for count, rgb in colours if rgb != (255, 255, 255))
    assert drawn > 0.05 * image.width * image.height  # bars, not a blank box
