"""Headless Chromium for tests: Playwright driving the system browser (Debian `chromium`; browsers are never
downloaded).

Without a browser or the playwright package, browser tests skip with the reason, except when CI=1 or
FACETURN_REQUIRE_BROWSER=1: then they fail, so a CI run cannot pass by skipping them. FACETURN_CHROMIUM names
another executable.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    """The Chromium executable: $FACETURN_CHROMIUM, else the first candidate on PATH, else /usr/bin/chromium."""
    if os.environ.get("FACETURN_CHROMIUM"):
        return os.environ["FACETURN_CHROMIUM"] if Path(os.environ["FACETURN_CHROMIUM"]).is_file() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def browser_required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("FACETURN_REQUIRE_BROWSER") == "1"


def _unavailable(reason: str) -> None:
    if browser_required():
        pytest.fail(f"{reason} (a browser is required here: CI or FACETURN_REQUIRE_BROWSER is set)")
    pytest.skip(reason)


@contextmanager
def launch_chromium(extra_args: tuple[str, ...] = ()) -> Iterator:
    """A Playwright Browser on the system Chromium, with autoplay allowed (media may play without a click) and
    `extra_args` (e.g. fake media devices)."""
    path = chromium_path()
    if path is None:
        _unavailable("no Chromium found (apt-get install chromium, or set FACETURN_CHROMIUM to its executable)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is missing (pip install -e '.[dev]')")
    args = ["--autoplay-policy=no-user-gesture-required", "--mute-audio", *extra_args]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=args)
        try:
            yield browser
        finally:
            browser.close()


def open_file(browser, path: Path, width_px: int = 1280, height_px: int = 900):
    """A new page showing a local HTML file, loaded."""
    page = browser.new_page(viewport={"width": width_px, "height": height_px})
    page.goto(Path(path).resolve().as_uri(), wait_until="load")
    return page


def png_content(path: Path) -> tuple[int, float]:
    """(distinct colours, fraction of pixels that differ from the most common colour) of a PNG screenshot."""
    from matplotlib.image import imread

    rgb = (imread(str(path))[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    colours, counts = np.unique(rgb, axis=0, return_counts=True)
    return len(colours), 1.0 - counts.max() / counts.sum()
