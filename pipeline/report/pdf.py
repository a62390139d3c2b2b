"""report.html -> report.pdf with headless Chromium (the browser the report is built for)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pipeline.errors import MsafError
from pipeline.fsutil import atomic_output

PAPER = {"a4": "A4", "letter": "letter"}
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str:
    """The Chromium or Chrome executable that prints PDFs; one clear line when none is installed."""
    for name in BROWSERS:
        if found := shutil.which(name):
            return found
    raise MsafError(
        "--pdf needs Chromium or Chrome on PATH (Debian: apt-get install chromium); "
        "or open report.html and print it (the page has a print stylesheet)"
    )


def print_pdf(html: Path, pdf: Path, paper: str = "a4", timeout: float = 120) -> Path:
    """Print ``html`` to ``pdf`` on A4 or Letter (the print stylesheet wraps tables to the page)."""
    browser = find_browser()
    size = PAPER[paper.lower()]
    page = html.read_text().replace("</head>", f"<style>@page {{ size: {size}; }}</style></head>", 1)
    staged = html.with_name(f".{html.stem}.print.html")
    staged.write_text(page)
    try:
        with atomic_output(pdf) as tmp:
            result = subprocess.run(
                [
                    browser,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-pdf-header-footer",
                    "--run-all-compositor-stages-before-draw",
                    f"--print-to-pdf={tmp}",
                    staged.resolve().as_uri(),
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if result.returncode != 0 or not tmp.read_bytes().startswith(b"%PDF"):
                raise MsafError(f"{browser} could not print {html.name} ({result.stderr.strip()[-200:] or 'no PDF'})")
    except subprocess.TimeoutExpired:
        raise MsafError(f"{browser} did not print {html.name} within {timeout:.0f} s") from None
    finally:
        staged.unlink(missing_ok=True)
    return pdf
