"""Takes a screenshot of the demo page (examples/app.py) in a real browser, after a query.

    python examples/app.py --model MODEL --port 7861 &          # serve the page
    pip install playwright && apt-get install chromium          # the browser driver, a browser
    python docs/figures/screenshot_demo.py --url http://127.0.0.1:7861 --user 0 --output docs/figures/demo_app_movie.png

It loads a real user's liked movies (`--user`) or types titles (`--titles`), presses "Recommend",
waits for the ranked posters and saves the whole page.
"""

import argparse
import shutil

from playwright.sync_api import sync_playwright


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--user", help="a user id of the catalogue: their liked movies become the history")
    parser.add_argument("--output", required=True)
    parser.add_argument("--browser", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                        help="browser executable (default: chromium on the PATH)")
    parser.add_argument("--timeout-s", type=float, default=600, help="how long ranking may take")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.browser, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 1500})
        page.goto(args.url, wait_until="load")
        page.get_by_role("button", name="Recommend").wait_for(timeout=60_000)
        if args.user is not None:
            page.get_by_placeholder("empty: a new user").fill(args.user)
            page.get_by_role("button", name="Load their liked movies").click()
            page.wait_for_timeout(3000)
        page.get_by_role("button", name="Recommend").click()
        page.get_by_text("Scores and descriptions").wait_for(timeout=args.timeout_s * 1000)
        page.wait_for_selector("text=/Ranked \\d+/", timeout=args.timeout_s * 1000)
        page.wait_for_timeout(3000)  # posters load after the table
        page.screenshot(path=args.output, full_page=True)
        browser.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
