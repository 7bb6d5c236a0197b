"""Property-based fuzzing of everything that parses user input: only UserError may escape.

A parser that lets a ValueError, OverflowError or UnicodeDecodeError through turns a typo in
a YAML file or a broken PNG into a traceback; the CLI promises one line and exit code 2.
Hypothesis feeds a few hundred cases to each parser (no example database is written).
"""

from __future__ import annotations

import io
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from segdecay.config import TrainConfig, from_dict, parse_size
from segdecay.data.folder import _read_classes, _read_palette
from segdecay.data.imageio import read_image, read_mask_raw
from segdecay.decay import DecayRule
from segdecay.errors import UserError

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# YAML-like values: what yaml.safe_load can hand to from_dict, plus non-finite floats.
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                     st.sampled_from(["1e999", "nan", "-inf", "32x32", "8", "true", "1.5",
                                      "0x10", "", " "]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)
_names = sorted(TrainConfig.fields())
_keys = st.one_of(st.sampled_from(_names), st.sampled_from([n.replace("_", "-") for n in _names]),
                  st.text(max_size=12), st.integers(), st.none(), st.booleans())


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


# Shapes each kind of field must survive: sizes as lists of floats (inf!), names as lists.
_typed = st.one_of(
    st.tuples(st.sampled_from(["size", "crop", "eval_size"]),
              st.lists(st.one_of(st.floats(), st.integers(), st.text(max_size=3)), max_size=3)),
    st.tuples(st.sampled_from(["epochs", "steps", "batch_size", "seed"]),
              st.one_of(st.floats(), st.text(max_size=6), st.integers())),
    st.tuples(st.sampled_from(["decay_rules", "class_names"]), _values),
)


@FUZZ
@given(st.one_of(st.dictionaries(_keys, _values, max_size=6),
                 st.lists(_typed, max_size=3).map(dict)))
def test_from_dict_raises_only_user_error(values: dict) -> None:
    try:
        config = from_dict(values, "--config fuzz.yaml")
    except UserError:
        return
    assert isinstance(config, TrainConfig)
    for name in ("epochs", "batch_size", "eval_every"):
        value = getattr(config, name)
        # None: decided per run (eval_every, and batch_size from the training split)
        assert (name in ("eval_every", "batch_size") and value is None) or value >= 1
    if config.size is not None:
        assert len(config.size) == 2 and min(config.size) >= 8


@FUZZ
@given(st.one_of(st.text(), st.builds("{}={}".format, st.text(max_size=12),
                                      st.one_of(st.text(max_size=6), st.floats().map(str)))))
def test_decay_rule_parse_raises_only_user_error(text: str) -> None:
    try:
        rule = DecayRule.parse(text)
    except UserError:
        return
    assert math.isfinite(rule.mult) and rule.mult >= 0  # parse refuses nan and inf


@FUZZ
@given(st.one_of(st.none(), st.text(), st.lists(st.one_of(st.integers(), st.text(max_size=4)),
                                               max_size=3)))
def test_parse_size_raises_only_user_error(text) -> None:
    try:
        hw = parse_size(text, "--size")
    except UserError:
        return
    assert hw is None or (len(hw) == 2 and min(hw) >= 8)


@FUZZ
@given(st.integers(8, 4096), st.integers(8, 4096), st.sampled_from(["x", "X", "×", " x "]))
def test_parse_size_accepts_every_well_formed_size(h, w, sep) -> None:
    """The other half of the fuzz: a parser that refused everything would pass the test
    above, not this one."""
    assert parse_size(f"{h}{sep}{w}", "--size") == (h, w)
    assert parse_size(str(h), "--size") == (h, h)
    assert parse_size([h, w], "--size") == (h, w)


_palette_lines = st.lists(st.one_of(
    st.text(max_size=30),
    st.builds("{} {} {} {}".format, st.integers(-5, 300), st.integers(0, 999999),
              st.integers(0, 255), st.text(max_size=8)),
    st.builds("ignore {},{},{}".format, st.integers(0, 300), st.integers(0, 255),
              st.integers(0, 255)),
    st.just("9" * 5000 + " 1 1"),
), max_size=8)


@FUZZ
@given(st.one_of(_palette_lines.map("\n".join).map(str.encode), st.binary(max_size=200)))
def test_palette_and_classes_parsing_raise_only_user_error(scratch: Path, raw: bytes) -> None:
    path = scratch / "palette.txt"
    path.write_bytes(raw)
    try:
        palette = _read_palette(path)
        assert palette.colours and all(0 <= v <= 255 for c in palette.colours for v in c)
    except UserError:
        pass
    classes = scratch / "classes.txt"
    classes.write_bytes(raw)
    try:
        assert _read_classes(classes)
    except UserError:
        pass


def _png(mode: str, size: tuple[int, int] = (5, 4)) -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


_VALID = [_png(m) for m in ("RGB", "L", "P", "RGBA", "LA", "1", "I;16")]


@st.composite
def _mangled_png(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos:pos + draw(st.integers(1, 64))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@FUZZ
@given(st.one_of(st.binary(max_size=300), _mangled_png(),
                 st.binary(max_size=64).map(lambda b: b"\x89PNG\r\n\x1a\n" + b)))
def test_image_readers_raise_only_user_error(scratch: Path, raw: bytes) -> None:
    path = scratch / "fuzz.png"
    path.write_bytes(raw)
    try:
        image = read_image(path)
        assert image.ndim == 3 and image.shape[0] == 3
    except UserError:
        pass
    try:
        mask = read_mask_raw(path)
        assert mask.ndim in (2, 3)
    except UserError:
        pass
