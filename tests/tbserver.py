"""A real TensorBoard on loopback, for the tests that check what it serves (callback and browser tests)."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 10.0) -> tuple[bytes, str]:
    """Body and Content-Type of a GET on the loopback server."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read(), r.headers.get("Content-Type", "")


@contextlib.contextmanager
def tensorboard(logdir, ready, timeout: float = 90.0):
    """Serve ``logdir`` on 127.0.0.1 (``--bind_all`` stays off) until the block ends.

    Polls the images plugin's tag list until ``ready(tags)`` holds, then yields
    ``(base_url, tags, reason)``: ``reason`` is None when it got ready, else why it stopped waiting
    (the server exited, or ``timeout`` seconds passed) with the last tags it listed. The server is
    stopped on exit. Its output goes to a file, not a pipe, so a chatty server cannot block on a
    full pipe.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
           "--port", str(port), "--load_fast=false", "--reload_interval", "1"]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        tags, reason = {}, f"no answer within {timeout:.0f} s"
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    log.seek(0)
                    reason = f"tensorboard exited with {proc.returncode}: {log.read()[-1500:]}"
                    break
                try:
                    tags = json.loads(get(base + "/data/plugin/images/tags", timeout=5)[0])
                except OSError:
                    pass
                else:
                    if ready(tags):
                        reason = None
                        break
                time.sleep(0.5)
            yield base, tags, reason
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
