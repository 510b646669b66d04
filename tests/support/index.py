"""The index under test served as a static host serves it, pip run against it, and small dist/ trees."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.wheelfactory import built_wheel


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def two_families(tmp_path: Path) -> Path:
    """Wheels of two families: the same file name, so each target was built into its own directory."""
    d = tmp_path / "dist"
    built_wheel(d / "default", index="cpu", target="linux-aarch64")
    built_wheel(d / "dotprod", index="armv8.2-dotprod", target="linux-aarch64-armv8.2-dotprod")
    return d


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    # --isolated: no user/site pip configuration or PIP_* variables (e.g. a find-links dir) take part.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return subprocess.run([sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, env=env, timeout=300)


PEP691 = "application/vnd.pypi.simple.v1+json"


@contextmanager
def served(root: Path) -> Iterator[str]:
    """``root`` over HTTP on loopback, as a static host serves it, with the content negotiation of PEP 691:
    a directory is its index.json to a client that asks for JSON, else its index.html."""

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def translate_path(self, path: str) -> str:
            local = super().translate_path(path)
            if os.path.isdir(local) and PEP691 in self.headers.get("Accept", ""):
                return os.path.join(local, "index.json")
            return local

        def guess_type(self, path: str | os.PathLike[str]) -> str:
            return PEP691 if os.fspath(path).endswith("index.json") else super().guess_type(path)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the test output is the assertions
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

