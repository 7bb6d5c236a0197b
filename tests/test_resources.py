"""Runs that cannot fit fail early and say what to change.

A dataset whose decoded cache exceeds the available memory is refused from the image headers,
before anything is decoded; a CUDA out-of-memory error becomes a one-line user error naming
--batch-size and --size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segdecay.data.folder as folder
import segdecay.training as training
import segdecay.training.epoch as epoch_module
from segdecay.cli import main
from segdecay.config import TrainConfig
from segdecay.data import load_dataset
from segdecay.errors import UserError
from segdecay.resources import (
    MEMORY_LIMIT_ENV,
    available_memory,
    cache_bytes,
    check_cache_fits,
    parse_bytes,
)


def _folder(root: Path, n: int = 3, hw: tuple[int, int] = (40, 60)) -> Path:
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.zeros((*hw, 3), np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.zeros(hw, np.uint8)).save(root / "masks" / f"{i}.png")
    return root


def test_available_memory_reads_meminfo_and_env_cap(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    2000000 kB\n")
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    assert available_memory(meminfo) == 2000000 * 1024
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1M")
    assert available_memory(meminfo) == 1024**2
    assert available_memory(tmp_path / "missing") == 1024**2
    assert parse_bytes("8G") == 8 * 1024**3 and parse_bytes("512MiB") == 512 * 1024**2
    with pytest.raises(UserError, match=MEMORY_LIMIT_ENV):
        parse_bytes("lots")


def test_cache_estimate_and_message() -> None:
    nbytes = cache_bytes([(360, 480)] * 10)
    assert nbytes == 2 * 10 * 360 * 480 * 4
    assert check_cache_fits(nbytes, "x", 10, available=nbytes) is None
    message = check_cache_fits(nbytes, "dataset folder /d", 10, available=nbytes - 1)
    assert message is not None and "/d" in message and "10 images" in message


def test_folder_too_big_is_refused_before_decoding(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder(tmp_path / "ds")
    need = cache_bytes([(40, 60)] * 3)
    decoded: list[Path] = []
    real = folder.read_image
    monkeypatch.setattr(folder, "read_image", lambda p: decoded.append(p) or real(p))
    # The in-memory decode (cache off or unwritable); streaming into the cache needs no room
    # in memory (tests/test_data_streaming.py).
    monkeypatch.setenv("SEGDECAY_CACHE", "off")
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(need - 1))
    with pytest.raises(UserError, match=r"3 images need about .* only .* available.*"
                       r"SEGDECAY_CACHE"):
        load_dataset(f"folder:{root}")
    assert decoded == []
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(need))
    assert len(load_dataset(f"folder:{root}").train) == 2
    assert len(decoded) == 3


def test_train_cli_refuses_with_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys) -> None:
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1K")
    rc = main(["train", "--data", "synthetic:size=32,n_train=8,n_val=8,n_test=8",
               "--out", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "memory" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cuda_out_of_memory_becomes_user_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(epoch_module, "augmented_batch", oom)
    config = TrainConfig(data="synthetic:size=32,n_train=8,n_val=8,n_test=8", epochs=1,
                         batch_size=4, size=[32, 32], device="cpu")
    with pytest.raises(UserError, match=r"out of GPU memory.*--batch-size 4.*32x32.*--size"):
        training.train(config, tmp_path / "run", log=training.Log(quiet=True))
