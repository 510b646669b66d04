"""Stage ``fetch``: the pinned llama-cpp-python sdist from the package index, sha256 verified.

The file is looked up through the index's JSON simple API (PEP 691), streamed to a temp file while
hashing, and renamed into ``<cache>/sdists/<sha256>/`` only if the hash is the one the pin records.
A mismatch leaves no file behind. A cached file is re-hashed before use (0.2 s for 77 MB): the cache
is outside the clone and may be tampered with or truncated.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_wheels.config import Pin, sdist_filename
from llama_wheels.core.cache import Cache, atomic_path, remove, sha256_file
from llama_wheels.core.errors import ChecksumError, LlamaWheelsError, UserError

DEFAULT_INDEX = "https://pypi.org/simple"
PROJECT = "llama-cpp-python"
_TIMEOUT = 120


def index_url() -> str:
    return os.environ.get("LLAMA_WHEELS_INDEX_URL", DEFAULT_INDEX).rstrip("/")


def _open(url: str, accept: str | None = None) -> Any:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        return urllib.request.urlopen(request, timeout=_TIMEOUT)
    except urllib.error.HTTPError as exc:
        raise LlamaWheelsError(f"{url}: HTTP {exc.code}; is the package index reachable?") from None
    except (urllib.error.URLError, OSError) as exc:
        raise LlamaWheelsError(f"{url}: {exc}; check the network or LLAMA_WHEELS_INDEX_URL") from None


@dataclass(frozen=True, kw_only=True)
class IndexedSdist:
    """An sdist as the package index lists it."""

    filename: str
    url: str
    sha256: str | None  # None: the index lists no hash (the download is checked against the pin's)


def find_sdist(version: str, *, culprit: str) -> IndexedSdist:
    """The sdist of llama-cpp-python ``version`` on the index's PEP 691 JSON page; ``culprit`` names what
    to correct when the index has none (e.g. ``pins.current.version``)."""
    page = f"{index_url()}/{PROJECT}/"
    with _open(page, "application/vnd.pypi.simple.v1+json") as response:
        try:
            listing = json.load(response)
        except ValueError:
            raise LlamaWheelsError(f"{page}: not a PEP 691 JSON page; check LLAMA_WHEELS_INDEX_URL") from None
    filename = sdist_filename(version)
    for entry in listing.get("files", []):
        if entry.get("filename") == filename:
            listed = entry.get("hashes", {}).get("sha256")
            return IndexedSdist(filename=filename, url=urllib.parse.urljoin(page, str(entry["url"])),
                                sha256=str(listed) if listed else None)
    versions = listing.get("versions") or sorted({
        str(e.get("filename", ""))[len("llama_cpp_python-"):-len(".tar.gz")] for e in listing.get("files", [])
        if str(e.get("filename", "")).startswith("llama_cpp_python-") and str(e["filename"]).endswith(".tar.gz")})
    close = difflib.get_close_matches(version, [str(v) for v in versions], n=3)
    hint = f" (near it: {', '.join(close)})" if close else ""
    raise UserError(f"{filename} is not on {page}{hint}; check {culprit}")


def find_sdist_url(pin: Pin) -> str:
    """The download URL of the pin's sdist, from the index's PEP 691 JSON page."""
    found = find_sdist(pin.version, culprit=f"pins.{pin.name}.version")
    if found.sha256 and found.sha256 != pin.sdist_sha256:
        raise ChecksumError(
            f"{pin.sdist_filename}: the index lists sha256 {found.sha256}, but pins.{pin.name} records "
            f"{pin.sdist_sha256}; fix build_config/pins.toml only if you trust the new file"
        )
    return found.url


def cached_sdist(pin: Pin, cache: Cache) -> Path:
    return cache.root / "sdists" / pin.sdist_sha256 / pin.sdist_filename


def fetch_sdist(pin: Pin, cache: Cache) -> Path:
    """Return the verified sdist of ``pin``, downloading it if the cache does not hold it."""
    final = cached_sdist(pin, cache)
    if final.is_file():
        if sha256_file(final) == pin.sdist_sha256:
            return final
        remove(final)  # corrupt or tampered: fetch again rather than trust it
    url = find_sdist_url(pin)
    try:
        with atomic_path(final) as tmp:
            digest = hashlib.sha256()
            with _open(url) as response, tmp.open("wb") as out:
                while block := response.read(1 << 20):
                    digest.update(block)
                    out.write(block)
            tmp.chmod(0o644)
            if digest.hexdigest() != pin.sdist_sha256:
                raise ChecksumError(
                    f"{pin.sdist_filename} from {url} has sha256 {digest.hexdigest()}, pins.{pin.name} "
                    f"expects {pin.sdist_sha256}; the download was discarded"
                )
    except BaseException:
        with contextlib.suppress(OSError):
            final.parent.rmdir()  # leave no empty <sha256>/ directory behind either
        raise
    return final
