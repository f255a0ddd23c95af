"""Fetch the dashboard's one third-party asset, the chart library uPlot, from the npm registry.

The dashboard must work offline (a plant network often has no internet), so no CDN is used at run
time: the files are served by the API from `static/vendor/`. They are not committed to git either;
this module fetches them at install/build time (`make` and the Dockerfile's builder stage run it):
the pinned tarball is downloaded, checked against its npm `integrity` (sha512) before anything is
written, and exactly three members are copied out of it. Nothing else in the tarball is extracted,
so an archive can never write outside the vendor directory.

    python -m analytics_platform.ui.vendor            # fetch unless already there (idempotent)
    python -m analytics_platform.ui.vendor --force    # fetch again
    python -m analytics_platform.ui.vendor --check    # exit 1 if an asset is missing

The registry is NPM_REGISTRY (default https://registry.npmjs.org; a mirror with the npm layout
works); a proxy is taken from https_proxy/HTTPS_PROXY as urllib does. On a machine that cannot
reach any registry, copy the three files in by hand: when the download fails and all three are
there, they are kept (with a warning) instead of failing the build. Stdlib only: it runs before
the project's dependencies are installed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import io
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from http.client import HTTPException
from pathlib import Path, PurePosixPath

PACKAGE = "uplot"
VERSION = "1.6.32"
# from the registry's metadata (`npm view uplot@1.6.32 dist.integrity`): the tarball must match it
INTEGRITY = "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="
DEFAULT_REGISTRY = "https://registry.npmjs.org"

VENDOR_DIR = Path(__file__).resolve().parent / "static" / "vendor"
# tarball member -> file name in VENDOR_DIR; the only members ever read from the archive
MEMBERS: dict[str, str] = {
    "package/dist/uPlot.iife.min.js": "uPlot.iife.min.js",
    "package/dist/uPlot.min.css": "uPlot.min.css",
    "package/LICENSE": "uPlot.LICENSE",
}
ASSETS: tuple[str, ...] = tuple(MEMBERS.values())
STAMP = f".{PACKAGE}-{VERSION}"  # in VENDOR_DIR; holds INTEGRITY once the assets are written
MAX_TARBALL_BYTES = 20 * 1024 * 1024  # the real one is ~0.3 MB; a registry answering more is wrong
TIMEOUT_S = 60


class VendorError(Exception):
    """A failure to report as one line (what failed and what to do), not as a traceback."""


class RegistryUnreachable(VendorError):
    """The download failed (network, proxy, HTTP status): nothing was checked or written."""

    def __init__(self, what: str, hint: str) -> None:
        super().__init__(f"{what}: {hint}")
        self.what = what


def _hint(target: Path) -> str:
    return (
        f"set NPM_REGISTRY to a reachable npm mirror (or https_proxy), or copy uPlot {VERSION}'s "
        f"dist/uPlot.iife.min.js, dist/uPlot.min.css and LICENSE (as uPlot.LICENSE) into {target}"
    )


def tarball_url(registry: str | None = None) -> str:
    """The pinned tarball's URL on `registry` (NPM_REGISTRY, else the public npm registry)."""
    base = (registry or os.environ.get("NPM_REGISTRY") or DEFAULT_REGISTRY).rstrip("/")
    return f"{base}/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"


def missing_assets(target: Path = VENDOR_DIR) -> list[str]:
    """The asset file names not present in `target`, so callers (make, tests, the API) can say
    exactly what is missing and how to get it."""
    return [name for name in ASSETS if not (target / name).is_file()]


def is_current(target: Path = VENDOR_DIR) -> bool:
    """True when every asset is present and the stamp says they came from the pinned tarball, so
    a second run (every `make test`) costs nothing and needs no network."""
    stamp = target / STAMP
    return not missing_assets(target) and stamp.is_file() and stamp.read_text().strip() == INTEGRITY


def parse_integrity(integrity: str) -> tuple[str, bytes]:
    """Split an npm/SRI integrity string ("sha512-<base64>") into its algorithm and digest.

    Only sha512 is accepted: it is what the npm registry publishes, and a weaker algorithm in the
    pin would be a mistake to refuse rather than to honour.
    """
    algorithm, sep, encoded = integrity.strip().partition("-")
    if not sep or algorithm != "sha512":
        raise VendorError(f"integrity {integrity!r}: expected 'sha512-<base64 digest>'")
    try:
        digest = base64.b64decode(encoded, validate=True)
    except ValueError as exc:
        raise VendorError(f"integrity {integrity!r}: the digest is not valid base64") from exc
    if len(digest) != hashlib.sha512().digest_size:
        raise VendorError(f"integrity {integrity!r}: a sha512 digest is 64 bytes, this one is {len(digest)}")
    return algorithm, digest


def verify(data: bytes, integrity: str = INTEGRITY) -> None:
    """Raise VendorError unless `data` hashes to `integrity` exactly: nothing downloaded is
    unpacked or written before this passes, so a tampered mirror or a truncated download never
    reaches the browser."""
    _, expected = parse_integrity(integrity)
    actual = hashlib.sha512(data).digest()
    if not hmac.compare_digest(actual, expected):
        got = "sha512-" + base64.b64encode(actual).decode()
        raise VendorError(
            f"integrity mismatch for {PACKAGE} {VERSION} ({len(data)} bytes): expected {integrity}, got {got}"
        )


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name)
    return name.startswith(("/", "\\")) or path.is_absolute() or ".." in path.parts or ".." in name.split("\\")


def extract(data: bytes, target: Path = VENDOR_DIR) -> list[Path]:
    """Write the three MEMBERS of the gzipped tarball `data` into `target`; return their paths.

    The whole archive is refused if any member has an absolute path or a `..` component (a
    well-formed npm tarball never has one), and the wanted members must be regular files that
    appear once. Every other member is ignored, never extracted. Each file is written to a temporary
    file in `target` and renamed over the old one, so a reader sees the old or the new file, never
    half of one.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            contents = _read_members(archive)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise VendorError(f"the {PACKAGE} {VERSION} tarball is not a readable .tgz: {exc}") from exc
    absent = [name for name in MEMBERS if name not in contents]
    if absent:
        raise VendorError(f"the {PACKAGE} {VERSION} tarball lacks {', '.join(absent)}")
    target.mkdir(parents=True, exist_ok=True)
    return [_write_atomic(target / MEMBERS[name], contents[name]) for name in MEMBERS]


def _read_members(archive: tarfile.TarFile) -> dict[str, bytes]:
    contents: dict[str, bytes] = {}
    for member in archive:
        if _unsafe(member.name):
            raise VendorError(f"the {PACKAGE} tarball has an unsafe member {member.name!r}: refused")
        if member.name not in MEMBERS:
            continue
        if not member.isreg():
            raise VendorError(f"the {PACKAGE} tarball's {member.name} is not a regular file: refused")
        if member.name in contents:
            raise VendorError(f"the {PACKAGE} tarball has {member.name} twice: refused")
        reader = archive.extractfile(member)
        assert reader is not None  # a regular file always has one
        contents[member.name] = reader.read()
    return contents


def _write_atomic(path: Path, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the API (another user in the image) reads these
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def download(url: str, target: Path = VENDOR_DIR) -> bytes:
    """GET `url` with urllib's defaults (proxies from the environment); RegistryUnreachable on
    failure, with what to do about it (`target` is where files copied by hand would go)."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            data = response.read(MAX_TARBALL_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise RegistryUnreachable(f"the npm registry answered HTTP {exc.code} for {url}", _hint(target)) from exc
    except (urllib.error.URLError, HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise RegistryUnreachable(f"cannot reach the npm registry at {url} ({reason})", _hint(target)) from exc
    if len(data) > MAX_TARBALL_BYTES:
        raise VendorError(f"{url} is larger than {MAX_TARBALL_BYTES} bytes, not the {PACKAGE} tarball: {_hint(target)}")
    return data


def fetch(force: bool = False, target: Path = VENDOR_DIR, registry: str | None = None) -> bool:
    """Make sure `target` holds the pinned uPlot assets; return True if they were downloaded.

    Does nothing (no network) when they are already there from the pinned tarball, unless `force`.
    The stamp is written last, so an interrupted run is simply repeated next time.
    """
    if not force and is_current(target):
        return False
    url = tarball_url(registry)
    data = download(url, target)
    try:
        verify(data, INTEGRITY)
    except VendorError as exc:
        raise VendorError(
            f"{exc}, downloaded from {url}: the registry, a mirror or a proxy served another file; "
            f"nothing was written. Point NPM_REGISTRY at a trustworthy mirror, or copy the genuine "
            f"uPlot {VERSION} files into {target}"
        ) from exc
    extract(data, target)
    for old in target.glob(f".{PACKAGE}-*"):
        if old.name != STAMP and old.is_file():
            old.unlink()  # a stamp from an earlier pin
    _write_atomic(target / STAMP, (INTEGRITY + "\n").encode())
    return True


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None, target: Path | None = None) -> int:
    """The command line: one line on stdout when something was fetched, one on stderr on failure
    (exit 1, no traceback). `target` defaults to VENDOR_DIR."""
    target = target or VENDOR_DIR
    parser = argparse.ArgumentParser(
        prog="python -m analytics_platform.ui.vendor",
        description=f"Fetch uPlot {VERSION} (the dashboard's chart library) from the npm registry into {target}.",
    )
    parser.add_argument("--force", action="store_true", help="download again even if the assets are there")
    parser.add_argument("--check", action="store_true", help="only check: exit 1 if an asset is missing")
    args = parser.parse_args(argv)
    where = _display(target)
    if args.check:
        missing = missing_assets(target)
        if missing:
            print(
                f"error: dashboard assets missing from {where}: {', '.join(missing)} "
                "(run: make ui-assets, or python -m analytics_platform.ui.vendor)",
                file=sys.stderr,
            )
            return 1
        return 0
    try:
        fetched = fetch(force=args.force, target=target)
    except RegistryUnreachable as exc:
        if not args.force and not missing_assets(target):
            # files copied in by hand (an offline machine): use them rather than fail the build
            print(f"warning: {exc.what}; keeping the uPlot files found in {where} (unchecked)", file=sys.stderr)
            return 0
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except VendorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # writing into the vendor directory
        print(f"error: cannot write the uPlot assets into {where}: {exc}", file=sys.stderr)
        return 1
    if fetched:
        print(f"uPlot {VERSION}: {', '.join(ASSETS)} fetched from {tarball_url()} into {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
