"""Headless Chromium for the browser tests: where it is, a skip mark where it is not, one runner."""

import os
import pathlib
import shutil
import subprocess

import pytest

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)

requires_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed; `make test-browser` installs it (apt-get install chromium) and runs this test",
)


def chromium(*args, window: str, budget_ms: int, offline: bool = False, timeout: int = 120) -> str:
    """Run headless Chromium with a throw-away profile; its standard output (e.g. ``--dump-dom``).

    ``budget_ms`` is the virtual time the page gets to draw; ``offline`` blocks every host name,
    so a page that needs the network shows it.
    """
    profile = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"kg-chromium-{os.getpid()}"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={window}",
        f"--virtual-time-budget={budget_ms}", *(["--host-resolver-rules=MAP * ~NOTFOUND"] if offline else []), *args,
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
