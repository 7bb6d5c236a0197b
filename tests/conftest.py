"""Shared fixtures."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for modules of tiny runs: 32x32 batches gain nothing from more,
    and on a busy 2-core machine two spinning OpenMP threads make a 2 s run take 10-30 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def private_decode_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own decoded-dataset cache, never the user's ~/.cache."""
    monkeypatch.setenv("SEGDECAY_CACHE", str(tmp_path_factory.mktemp("decode-cache")))


@pytest.fixture(autouse=True, scope="session")
def no_fsync():
    """Atomic writes keep their order (temp file, rename) but skip the flush to disk: a test
    cannot observe durability, and the tiny runs' checkpoints (100-230 MB each, one per
    epoch) would spend seconds in fsync. test_untrusted records the fsync calls themselves."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", lambda fd: None)
        yield
