"""A person's check of report.html: a real run against the sandbox, its report opened in
headless Chromium, the page saved as a PNG (docs/report.png). Not run in CI.

    .venv/bin/python bench/screenshot_report.py [--rows 600] [--rate 240] [--output docs/report.png]
                                                [--keep DIR] [--chromium PATH]

The run takes rows / rate minutes (about 2.5 by default), so the charts have several
minutes to draw. The sandbox is made to misbehave a little: a strict limit of 4 requests
per second against a client paced at `--rate` per minute (a few 429s), some 503s (retries)
and slow answers; the file has invalid rows, customers the org does not have (8015) and a
column naming an extended field the org lacks on some rows (warning 91015).
Chromium: the Debian package (`apt-get install chromium`), or any Chrome given by --chromium.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch_updater.config import load_config
from batch_updater.output.html_report import write_report_html
from batch_updater.runner import run
from batch_updater.sandbox import Faults, RateLimit, SandboxSettings, SandboxThread

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 1200
HEIGHT = 6000  # taller than the page: the blank below it is cut off


def write_input(path: Path, rows: int) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["identifierValue", "firstName", "extendedFields.city", "extendedFields.cty",
                         "extendedFields.dateOfBirth"])
        for i in range(rows):
            mobile = f"9198{i:08d}"
            if i % 37 == 5:
                mobile = f"98{i:03d}"          # too short: a validation error
            elif i % 53 == 7:
                mobile = f"9199{i:08d}"        # no such customer: 8015
            birth = "1990-13-45" if i % 71 == 3 else "1990-05-17"
            typo = "Pune" if i % 29 == 0 else ""  # an extended field the org lacks: warning 91015
            writer.writerow([mobile, f"Customer{i}", "Pune", typo, birth])
    return path


def make_run(folder: Path, rows: int, rate: int) -> Path:
    settings = SandboxSettings(customers=max(rows, 10_000), latency_seconds=0.03, rate_limit=RateLimit(4, 1.0),
                               faults=Faults(error_503=0.01, slow=0.08, slow_seconds=0.4), seed=19)
    with SandboxThread(settings) as server:
        config = load_config(None, overrides={
            "api.base_url": server.url, "api.username": settings.till_code, "limits.rate_per_minute": rate,
            "limits.concurrency": 8, "output.dir": str(folder / "out")},
            environ={"BATCH_UPDATER_PASSWORD": settings.password})
        summary = run(config, write_input(folder / "nightly-customers.csv", rows))
    print(f"run: {summary.rows:,} rows, {summary.errors} errors, {summary.throttled} throttled,"
          f" {summary.retries} retries, exit {summary.exit_code}")
    return Path(summary.reports["summary"]).parent


def screenshot(page: Path, output: Path, chromium: str) -> None:
    from PIL import Image, ImageChops  # matplotlib's own dependency

    raw = output.with_suffix(".full.png")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={raw}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(raw) as image:
        image = image.convert("RGB")
        background = Image.new("RGB", image.size, image.getpixel((0, image.height - 1)))
        box = ImageChops.difference(image, background).getbbox()  # the page, without the blank below
        bottom = min(image.height, (box[3] if box else image.height) + 24)
        image.crop((0, 0, image.width, bottom)).save(output, optimize=True)
    raw.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--rate", type=int, default=240, help="the client's limit per minute")
    parser.add_argument("--output", default=str(ROOT / "docs" / "report.png"))
    parser.add_argument("--keep", help="run in this folder and keep it (to open report.html yourself)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("google-chrome") or "chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        page = write_report_html(make_run(folder, args.rows, args.rate))
        print(f"report: {page} ({page.stat().st_size / 1024:,.0f} KB)")
        screenshot(page, Path(args.output), args.chromium)
    print(f"screenshot: {args.output}")


if __name__ == "__main__":
    main()
