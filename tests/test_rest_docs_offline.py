"""`/docs` (Swagger UI) and `/redoc` render with no network: their scripts and CSS come from the
daemon itself (the fastapi-offline wheel), never from a CDN. Checked the way a person would see it:
Debian's Chromium, headless, loads the page from a real daemon on SoftHSM2 with every host name
but 127.0.0.1 unresolvable, runs its JavaScript, and the rendered DOM lists every operation of
`/openapi.json`."""

from __future__ import annotations

import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import httpx
import pytest
from daemon import Daemon

pytest_plugins = ("ops_fixtures",)
pytestmark = pytest.mark.softhsm

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: the flags of /work/.library/env/machines/python.md: no background traffic on a closed network
HEADLESS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: "offline": any host but the daemon's fails to resolve, so a CDN reference would leave the page blank
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@pytest.fixture(scope="module")
def rest_url(daemon: Daemon) -> str:
    """A real `hsmbridge serve` on the session's SoftHSM2 token (ops_fixtures' module daemon)."""
    return daemon.rest_url


def rendered(url: str, profile: Path) -> str:
    """The DOM after the page's scripts ran (virtual time: no sleeping on a loaded machine)."""
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed: `make system-deps` installs it"
    result = subprocess.run(
        [
            CHROMIUM,
            *HEADLESS,
            f"--user-data-dir={profile}",
            OFFLINE,
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def operations(rest_url: str) -> set[tuple[str, str]]:
    spec = httpx.get(f"{rest_url}/openapi.json", timeout=30).json()
    return {(method.lower(), path) for path, item in spec["paths"].items() for method in item}


def test_the_pages_reference_only_local_assets(rest_url: str) -> None:
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{rest_url}{page}", timeout=30).text
        sources = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert sources, page
        assert all(source.startswith("/") for source in sources), sources
        for source in sources:
            asset = httpx.get(f"{rest_url}{source}", timeout=30)
            assert asset.status_code == 200, source
            assert len(asset.content) > 1000, source


def test_swagger_ui_lists_every_operation_offline(rest_url: str, tmp_path: Path) -> None:
    dom = rendered(f"{rest_url}/docs", tmp_path / "profile")
    shown = {
        (method.lower(), unescape(path))
        for method, path in re.findall(
            # a deprecated operation's path has class opblock-summary-path__deprecated
            r'class="opblock-summary-method">(\w+)</span>[^>]*>'
            r'<span class="opblock-summary-path(?:__deprecated)?" data-path="([^"]+)"',
            dom,
        )
    }
    expected = operations(rest_url)
    assert ("post", "/api/v2/keys/{id}/actions/wrap") in expected
    assert shown == expected


def test_redoc_renders_offline(rest_url: str, tmp_path: Path) -> None:
    dom = rendered(f"{rest_url}/redoc", tmp_path / "profile")
    assert len(re.findall(r"operation-type (?:get|head|post|put|patch|delete)\b", dom)) >= len(
        operations(rest_url)
    )
    assert "/api/v2/keys/{id}/actions/wrap" in unescape(dom)
