"""Opens a page `umi report` wrote in headless Chromium (Debian's, driven by Playwright)
and checks what a person would see: every expected section laid out, every chart drawn
with marks, the search trees there, nothing fetched from anywhere, no console error, no
page wider than the window. Saves a full-page screenshot.

usage: report_page.py PAGE.html SCREENSHOT.png EXPECT_JSON
EXPECT_JSON: {"sections": [ids], "min_charts": n, "trees": n, "text": [strings]}
Prints one JSON line of what it measured; exits 1 naming each failed check.
"""

import json
import pathlib
import sys

from playwright.sync_api import sync_playwright

page_path, shot_path, expect = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
url = pathlib.Path(page_path).resolve().as_uri()
failures = []
requests = []
console_errors = []

with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    page.goto(url)
    page.wait_for_load_state("load")

    for section in expect["sections"]:
        box = page.locator(f"section#{section}").bounding_box()
        if box is None or box["height"] < 20:
            failures.append(f"section #{section} is missing or empty ({box})")

    charts = page.locator("svg.chart")
    drawn = 0
    for i in range(charts.count()):
        box = charts.nth(i).bounding_box()
        if box and box["width"] > 200 and box["height"] > 40:
            drawn += 1
        else:
            label = charts.nth(i).get_attribute("aria-label")
            failures.append(f"chart {label!r} is not laid out ({box})")
    if drawn < expect["min_charts"]:
        failures.append(f"{drawn} charts drawn, expected at least {expect['min_charts']}")
    marks = page.locator("svg .mark").count()
    if marks == 0:
        failures.append("no chart has a mark")

    trees = page.locator("figure.search-tree")
    if trees.count() != expect["trees"]:
        failures.append(f"{trees.count()} search trees, expected {expect['trees']}")
    for i in range(trees.count()):
        nodes = trees.nth(i).locator("circle.node")
        box = nodes.first.bounding_box() if nodes.count() else None
        if box is None or box["width"] < 4:
            failures.append(f"search tree {i} has no visible node")

    body_text = page.inner_text("body")
    for text in expect.get("text", []):
        if text not in body_text:
            failures.append(f"the page does not say {text!r}")

    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    if overflow > 1:
        failures.append(f"the page is {overflow}px wider than the window")

    outside = [r for r in requests if not r.startswith("file://")]
    if outside:
        failures.append(f"requests outside the file: {outside}")
    if console_errors:
        failures.append(f"console errors: {console_errors}")

    page.screenshot(path=shot_path, full_page=True)
    browser.close()

print(
    json.dumps(
        {
            "charts": drawn,
            "marks": marks,
            "trees": expect["trees"],
            "requests": len(requests),
            "screenshot": shot_path,
        }
    )
)
if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
