"""The uPlot vendoring (analytics_platform.ui.vendor) on tarballs built in memory: no network."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from analytics_platform.ui import vendor

GOOD = {
    "package/dist/uPlot.iife.min.js": b"var uPlot=function(){};\n",
    "package/dist/uPlot.min.css": b".uplot{display:block}\n",
    "package/LICENSE": b"The MIT License (MIT)\n",
    # members that must never be extracted
    "package/package.json": b'{"name": "uplot"}\n',
    "package/src/x.js": b"export default 1;\n",
    "package/dist/uPlot.esm.js": b"export default 2;\n",
}


def tarball(members: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    """A gzipped tar like npm's: regular files by name, and symlinks name -> target."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_the_pinned_integrity_parses() -> None:
    algorithm, digest = vendor.parse_integrity(vendor.INTEGRITY)
    assert algorithm == "sha512"
    assert len(digest) == 64


@pytest.mark.parametrize(
    "bad",
    [
        "sha256-" + base64.b64encode(b"x" * 32).decode(),
        "sha512-not*base64",
        "sha512-" + base64.b64encode(b"x").decode(),
    ],
)
def test_a_malformed_integrity_is_refused(bad: str) -> None:
    with pytest.raises(vendor.VendorError, match="integrity"):
        vendor.parse_integrity(bad)


def test_verify_accepts_the_exact_bytes() -> None:
    data = tarball(GOOD)
    vendor.verify(data, integrity(data))


def test_verify_refuses_tampered_bytes() -> None:
    data = tarball(GOOD)
    tampered = tarball({**GOOD, "package/dist/uPlot.iife.min.js": b"alert('pwned');\n"})
    with pytest.raises(vendor.VendorError, match=r"integrity mismatch .*expected sha512-.*got sha512-"):
        vendor.verify(tampered, integrity(data))
    with pytest.raises(vendor.VendorError, match="integrity mismatch"):
        vendor.verify(data + b"\0", integrity(data))


def test_extract_writes_exactly_the_three_assets(tmp_path: Path) -> None:
    target = tmp_path / "vendor"
    written = vendor.extract(tarball(GOOD), target)
    assert sorted(p.name for p in written) == sorted(vendor.ASSETS)
    assert all_files(tmp_path) == sorted(f"vendor/{name}" for name in vendor.ASSETS)
    assert (target / "uPlot.iife.min.js").read_bytes() == GOOD["package/dist/uPlot.iife.min.js"]
    assert (target / "uPlot.min.css").read_bytes() == GOOD["package/dist/uPlot.min.css"]
    assert (target / "uPlot.LICENSE").read_bytes() == GOOD["package/LICENSE"]
    assert all((target / name).stat().st_mode & 0o777 == 0o644 for name in vendor.ASSETS)


def test_extract_replaces_old_files(tmp_path: Path) -> None:
    (tmp_path / "uPlot.min.css").write_text("old")
    vendor.extract(tarball(GOOD), tmp_path)
    assert (tmp_path / "uPlot.min.css").read_bytes() == GOOD["package/dist/uPlot.min.css"]
    assert all_files(tmp_path) == sorted(vendor.ASSETS)  # no temporary file left behind


@pytest.mark.parametrize("evil", ["package/../evil", "/etc/evil", "package/dist/../../evil", "../package/LICENSE"])
def test_an_unsafe_member_refuses_the_archive(tmp_path: Path, evil: str) -> None:
    with pytest.raises(vendor.VendorError, match="unsafe member"):
        vendor.extract(tarball({**GOOD, evil: b"x"}), tmp_path / "vendor")
    assert all_files(tmp_path) == []


def test_a_symlinked_asset_is_refused(tmp_path: Path) -> None:
    members = {k: v for k, v in GOOD.items() if k != "package/LICENSE"}
    with pytest.raises(vendor.VendorError, match="not a regular file"):
        vendor.extract(tarball(members, links={"package/LICENSE": "/etc/passwd"}), tmp_path)
    assert all_files(tmp_path) == []


def test_a_missing_asset_is_reported(tmp_path: Path) -> None:
    members = {k: v for k, v in GOOD.items() if k != "package/dist/uPlot.min.css"}
    with pytest.raises(vendor.VendorError, match=r"lacks package/dist/uPlot\.min\.css"):
        vendor.extract(tarball(members), tmp_path)
    assert all_files(tmp_path) == []


def test_not_a_tarball(tmp_path: Path) -> None:
    with pytest.raises(vendor.VendorError, match=r"not a readable \.tgz"):
        vendor.extract(b"<html>proxy login</html>", tmp_path)


def test_missing_assets(tmp_path: Path) -> None:
    assert vendor.missing_assets(tmp_path) == list(vendor.ASSETS)
    assert vendor.missing_assets(tmp_path / "absent") == list(vendor.ASSETS)
    vendor.extract(tarball(GOOD), tmp_path)
    assert vendor.missing_assets(tmp_path) == []


def test_fetch_is_idempotent_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the pinned integrity pointed at the fake tarball, fetch downloads once, writes the
    stamp, and after that needs no network."""
    data = tarball(GOOD)
    urls: list[str] = []

    def download(url: str, target: Path) -> bytes:
        urls.append(url)
        return data

    monkeypatch.setattr(vendor, "download", download)
    monkeypatch.setattr(vendor, "INTEGRITY", integrity(data))
    (tmp_path / ".uplot-1.0.0").write_text("an older pin's stamp\n")
    assert vendor.fetch(target=tmp_path, registry="https://mirror.example/npm/")
    assert urls == [f"https://mirror.example/npm/uplot/-/uplot-{vendor.VERSION}.tgz"]
    assert (tmp_path / vendor.STAMP).read_text().strip() == integrity(data)
    assert all_files(tmp_path) == sorted([*vendor.ASSETS, vendor.STAMP])
    assert not vendor.fetch(target=tmp_path)
    assert len(urls) == 1
    assert vendor.fetch(force=True, target=tmp_path)
    assert len(urls) == 2


def test_fetch_writes_nothing_when_the_download_is_tampered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vendor, "download", lambda url, target: tarball(GOOD))
    with pytest.raises(vendor.VendorError, match=r"integrity mismatch.*nothing was written"):
        vendor.fetch(target=tmp_path)  # the real pin: the fake tarball cannot match it
    assert all_files(tmp_path) == []


def test_the_registry_comes_from_npm_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NPM_REGISTRY", raising=False)
    assert vendor.tarball_url() == f"https://registry.npmjs.org/uplot/-/uplot-{vendor.VERSION}.tgz"
    monkeypatch.setenv("NPM_REGISTRY", "http://npm.plant.local:4873/")
    assert vendor.tarball_url() == f"http://npm.plant.local:4873/uplot/-/uplot-{vendor.VERSION}.tgz"


def test_an_unreachable_registry_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing listens on port 9 of localhost: the error names the URL and what to do."""
    for name in ("http_proxy", "https_proxy", "all_proxy"):  # a proxy would answer instead
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    with pytest.raises(vendor.RegistryUnreachable) as caught:
        vendor.download("http://127.0.0.1:9/uplot/-/uplot-1.6.32.tgz", tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert "cannot reach the npm registry at http://127.0.0.1:9/" in message
    assert "NPM_REGISTRY" in message and str(tmp_path) in message


# ---- the command line: exit codes and one-line messages ----


def unreachable(url: str, target: Path) -> bytes:
    raise vendor.RegistryUnreachable(f"cannot reach the npm registry at {url} (refused)", "set NPM_REGISTRY")


def test_check_on_an_empty_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert vendor.main(["--check"], target=tmp_path) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(name in err for name in vendor.ASSETS), err
    vendor.extract(tarball(GOOD), tmp_path)
    assert vendor.main(["--check"], target=tmp_path) == 0
    assert capsys.readouterr() == ("", "")


def test_cli_failures_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(vendor, "download", unreachable)
    assert vendor.main([], target=tmp_path) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: cannot reach the npm registry at ") and err.count("\n") == 1, err
    monkeypatch.setattr(vendor, "download", lambda url, target: tarball(GOOD))
    assert vendor.main([], target=tmp_path) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: integrity mismatch") and err.count("\n") == 1, err
    assert all_files(tmp_path) == []


def test_files_copied_by_hand_are_kept_when_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    vendor.extract(tarball(GOOD), tmp_path)  # no stamp: as if copied in by hand
    monkeypatch.setattr(vendor, "download", unreachable)
    assert vendor.main([], target=tmp_path) == 0
    assert capsys.readouterr().err.startswith("warning: cannot reach the npm registry")
    assert vendor.main(["--force"], target=tmp_path) == 1  # asked for a fresh copy: that failed
    assert capsys.readouterr().err.startswith("error: ")
