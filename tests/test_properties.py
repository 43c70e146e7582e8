"""Property tests of the readers and parsers (issue 22): IDX files, the CLI's seeds, grids and
config files, and the safetensors state files.

Every reader either returns exactly what was written or raises a clear ``ValueError``-type error
(`CLIError` for the command line) — never an IndexError, struct.error, zlib.error or traceback,
and never a silent wrong load (state files carry a sha256 of their contents, so a flipped bit
is caught). Each property keeps the failing example that found its bug as an ``@example``.
"""

import contextlib
import gzip
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from myelin._state import read_state, write_state
from myelin.cli import CLIError, _grid_args, _read_config, _seeds, option_set
from myelin.data.idx import parse_idx, read_idx
from myelin.importance import Importance

FAST = settings(max_examples=50, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- IDX ----------------------------------------------------------------------------------------
_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
              np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def _idx_bytes(a: np.ndarray) -> bytes:
    """The IDX encoding of `a`: magic (0, 0, type, ndim), big-endian sizes, big-endian data."""
    big = a.astype(a.dtype.newbyteorder(">")) if a.dtype.itemsize > 1 else a
    return (bytes([0, 0, _IDX_CODES[big.dtype], a.ndim])
            + b"".join(n.to_bytes(4, "big") for n in a.shape) + big.tobytes())


_idx_dtypes = st.sampled_from([np.uint8, np.int8, np.dtype(">i2"), np.dtype(">i4"),
                               np.dtype(">f4"), np.dtype(">f8")])
idx_arrays = st.builds(lambda dt, shape: (dt, shape), _idx_dtypes,
                       st.lists(st.integers(0, 5), min_size=1, max_size=4)).flatmap(
    lambda ds: arrays(ds[0], tuple(ds[1]), elements={"allow_nan": False}
                      if np.dtype(ds[0]).kind == "f" else None))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype.newbyteorder("=") and np.array_equal(a, b)


@FAST
@given(idx_arrays, st.booleans())
def test_idx_round_trip_raw_and_gzipped(tmp_path, a, gz):
    raw = _idx_bytes(a)
    path = tmp_path / ("x-idx-ubyte.gz" if gz else "x-idx-ubyte")
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    out = read_idx(path)
    assert out.dtype.isnative and _same(out, a.astype(a.dtype.newbyteorder("=")))


@FAST
@given(idx_arrays, st.data())
def test_idx_truncated_or_extended_is_a_value_error(a, data):
    raw = _idx_bytes(a)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(ValueError, match="<bytes>"):             # the message names the source
        parse_idx(raw[:cut])
    with pytest.raises(ValueError, match="<bytes>"):
        parse_idx(raw + data.draw(st.binary(min_size=1, max_size=9)))
    with pytest.raises(ValueError, match="no dimensions"):        # a header without sizes
        parse_idx(raw[:3] + b"\x00" + raw[4 + 4 * a.ndim:][:a.dtype.itemsize])


@FAST
@given(idx_arrays, st.data())
def test_idx_flipped_bit_is_a_value_error_or_exactly_what_the_bytes_say(a, data):
    """No checksum in IDX: a flip in the data or the type byte loads, but then the array must
    be exactly what the flipped bytes encode (nothing ignored, nothing misread)."""
    raw = bytearray(_idx_bytes(a))
    raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    try:
        out = parse_idx(bytes(raw))
    except ValueError as exc:
        assert "<bytes>" in str(exc)                            # the message names the source
    else:
        assert _idx_bytes(out) == bytes(raw)


@FAST
@given(idx_arrays, st.data())
def test_gzipped_idx_truncated_is_a_value_error(tmp_path, a, data):
    packed = gzip.compress(_idx_bytes(a), mtime=0)
    path = tmp_path / "t-idx-ubyte.gz"
    path.write_bytes(packed[:data.draw(st.integers(3, len(packed) - 1))])
    with pytest.raises(ValueError, match=r"t-idx-ubyte\.gz"):
        read_idx(path)


_DIGITS = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)


@FAST
@given(st.just(_DIGITS), st.data())
@example(_DIGITS, None)
def test_gzipped_idx_flipped_bit_is_a_value_error_or_the_same_array(tmp_path, a, data):
    packed = bytearray(gzip.compress(_idx_bytes(a), mtime=0))
    if data is None:                                          # a known zlib.error
        at, bit = 11, 1
    else:
        at, bit = data.draw(st.integers(0, len(packed) - 1)), data.draw(st.integers(0, 7))
    packed[at] ^= 1 << bit
    path = tmp_path / "f-idx-ubyte.gz"
    path.write_bytes(bytes(packed))
    try:
        out = read_idx(path)
    except ValueError:
        return
    assert _same(out, a)          # only gzip header fields (mtime, OS...) can flip unnoticed


# --- CLI: seeds and grids -------------------------------------------------------------------------
OPTIONS = option_set()
seeds = st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=8)
spaces = st.sampled_from(["", " ", "  "])


@FAST
@given(seeds, st.data())
def test_seeds_parse_as_written_duplicates_dropped_in_order(xs, data):
    text = ",".join(data.draw(spaces) + str(x) + data.draw(spaces) for x in xs)
    expected = list(dict.fromkeys(xs))
    assert _seeds(text) == expected
    assert _seeds(xs) == expected                       # a TOML/YAML list
    assert _seeds(text + ",") == expected               # a trailing comma is harmless


@FAST
@given(st.one_of(st.text(max_size=12), st.lists(st.text(max_size=4), max_size=3)))
def test_seeds_refuse_anything_else_with_a_cli_error(value):
    try:
        out = _seeds(value)
    except CLIError as exc:
        assert "seed" in str(exc)
    else:
        assert out and all(isinstance(s, int) for s in out)


@FAST
@given(st.lists(st.one_of(st.booleans(), st.floats(0, 100).filter(lambda v: not v.is_integer())),
                min_size=1, max_size=3))
@example([0.5, 1.7])
def test_seeds_refuse_non_integers_from_a_config(values):
    with pytest.raises(CLIError):
        _seeds(values)


@FAST
@given(st.lists(st.floats(-1e6, 1e6).map(lambda v: v + 0.0), min_size=1, max_size=6),  # no -0.0
       st.lists(st.lists(st.integers(1, 999), min_size=1, max_size=3), min_size=1, max_size=3),
       st.lists(st.integers(0, 10**6), min_size=1, max_size=4))
def test_grid_values_parse_as_written(lams, widths, iterations):
    # a list option's grid values are separated by ";" once the text has one (else by ",":
    # widths=300,150 is two points), so a single list value is written with a trailing ";"
    grid = _grid_args([f"lam={','.join(map(repr, lams))}",
                       "widths=" + ";".join(",".join(map(str, w)) for w in widths) + ";",
                       f"batch-size={','.join(map(str, iterations))}"], OPTIONS)
    assert grid["lam"] == list(dict.fromkeys(lams))
    assert grid["widths"] == [list(w) for w in dict.fromkeys(map(tuple, widths))]
    assert grid["batch_size"] == list(dict.fromkeys(iterations))


_grid_keys = st.sampled_from(["lam", "widths", "batch_size", "labels-trick", "method", "seed",
                              "lamm", "optimizer", "epochs", ""])


@FAST
@given(st.lists(st.tuples(_grid_keys, st.text(max_size=12)), min_size=1, max_size=3),
       st.booleans())
def test_grid_refuses_bad_values_and_keys_with_a_cli_error(items, with_equals):
    args = [f"{k}={v}" if with_equals else f"{k}{v}" for k, v in items]
    try:
        grid = _grid_args(args, OPTIONS)
    except CLIError as exc:
        assert str(exc)
    else:
        for key, values in grid.items():
            assert values and key in (*OPTIONS, "method")
            for v in values:
                if OPTIONS.get(key) is not None and OPTIONS[key].type == "float":
                    assert math.isfinite(v)


# --- CLI: TOML (and YAML) configs -----------------------------------------------------------------
_plain = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=10)
_config_values = {
    "lam": st.floats(-1e9, 1e9), "epochs": st.floats(0, 100), "iterations": st.integers(0, 10**6),
    "widths": st.lists(st.integers(1, 4096), max_size=4), "labels_trick": st.booleans(),
    "optimizer": _plain, "method": _plain, "seed": st.integers(0, 2**31 - 1)}


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


@FAST
@given(st.fixed_dictionaries({}, optional=_config_values), st.data())
def test_toml_config_round_trip(tmp_path, config, data):
    lines = [f"{k.replace('_', '-') if data.draw(st.booleans()) else k} = {_toml(v)}"
             for k, v in config.items()]
    path = tmp_path / "c.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = _read_config(str(path), OPTIONS)
    assert out == config and all(type(out[k]) is type(v) for k, v in config.items())


_toml_literals = st.one_of(
    st.integers(-10**20, 10**20).map(str), st.floats(allow_nan=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "true", "1979-05-27", "07:32:00", "{}", "{a = 1}",
                     "[[1]]", "[true]", "[1.5]", "[]", '"300,150"', '"x"', '""', "'3'", "0x1f",
                     "1e400", '"nan"', "[1, 2]", "[\"a\", 1]"]))
_toml_keys = st.sampled_from(["lam", "epochs", "iterations", "widths", "labels-trick", "seed",
                              "method", "scenario", "optimizer", "seeds", "jobs", "lamda",
                              "batch_size", "grid"])


@FAST
@given(st.lists(st.tuples(_toml_keys, _toml_literals), max_size=4, unique_by=lambda kv: kv[0]),
       st.one_of(st.none(), st.lists(st.tuples(_toml_keys, _toml_literals), max_size=3,
                                     unique_by=lambda kv: kv[0])))
def test_toml_config_is_read_or_refused_with_a_cli_error(tmp_path, items, grid):
    text = "".join(f"{k} = {v}\n" for k, v in items if k != "grid")
    if grid is not None:
        text += "[grid]\n" + "".join(f"{k} = {v}\n" for k, v in grid)
    path = tmp_path / "c.toml"
    path.write_text(text)
    try:
        out = _read_config(str(path), OPTIONS)
    except CLIError as exc:
        assert "c.toml" in str(exc)
    else:
        for key, value in out.items():
            if key in OPTIONS and OPTIONS[key].type == "float":
                assert isinstance(value, float) and math.isfinite(value)


@FAST
@given(st.sampled_from(["iterations", "batch-size", "seed", "widths"]),
       st.floats(-1e6, 1e6).filter(lambda v: not v.is_integer()))
def test_toml_config_refuses_a_fraction_for_an_integer_option(tmp_path, key, value):
    path = tmp_path / "f.toml"
    path.write_text(f"{key} = {'[' + repr(value) + ']' if key == 'widths' else repr(value)}\n")
    with pytest.raises(CLIError, match="integer"):
        _read_config(str(path), OPTIONS)


@FAST
@given(st.text(max_size=40))
def test_any_toml_text_is_read_or_refused_with_a_cli_error(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text, encoding="utf-8")
    try:
        _read_config(str(path), OPTIONS)
    except CLIError as exc:
        assert "r.toml" in str(exc)


@FAST
@given(st.binary(max_size=20))
@example(b"\xff")
def test_config_bytes_that_are_not_text_give_a_cli_error(tmp_path, raw):
    path = tmp_path / "b.toml"
    path.write_bytes(raw)
    try:
        _read_config(str(path), OPTIONS)
    except CLIError as exc:
        assert "b.toml" in str(exc)


@FAST
@given(st.text(max_size=30))
@example("lam: [1\n")
@example("1: 2\n")
def test_any_yaml_text_is_read_or_refused_with_a_cli_error(tmp_path, text):
    pytest.importorskip("yaml")
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        _read_config(str(path), OPTIONS)
    except CLIError as exc:
        assert "c.yaml" in str(exc)


# --- safetensors state files (myelin._state, Importance.save / load) -----------------------------
_names = st.text("abcdefghij._", min_size=1, max_size=8)
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9), st.floats(-1e9, 1e9),
              st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)


@st.composite
def _tensors(draw, dtypes=(torch.float32, torch.float64, torch.bfloat16, torch.int64)):
    out = {}
    for name in draw(st.lists(_names, min_size=1, max_size=3, unique=True)):
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        dtype = draw(st.sampled_from(dtypes))
        values = draw(arrays(np.float64, tuple(shape), elements=st.floats(0, 1e6)))
        out[name] = torch.from_numpy(values).to(dtype)
    return out


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k])
        for k in a)


@FAST
@given(_tensors(), _json)
def test_state_round_trip(tmp_path, tensors, meta):
    path = tmp_path / "s.safetensors"
    write_state(path, tensors, "myelin.test", meta)
    back, meta_back = read_state(path, "myelin.test", "test state")
    assert _equal(back, tensors) and meta_back == meta
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]     # no temporary left


@FAST
@given(_tensors(dtypes=(torch.float32, torch.float64)),
       st.dictionaries(st.text(max_size=5), _json, max_size=3))
def test_importance_round_trip(tmp_path, values, meta):
    path = tmp_path / "i.safetensors"
    Importance(values, meta).save(path)
    back = Importance.load(path)
    assert _equal(dict(back.items()), values) and back.meta == meta


def _state_file(tmp_path) -> tuple:
    """An Importance file: (path, its bytes, its tensors, its meta)."""
    tensors = {"fc.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7,
               "fc.bias": torch.ones(3)}
    meta = {"estimator": "fisher", "n_samples": 100}
    path = tmp_path / "imp.safetensors"
    Importance(tensors, meta).save(path)
    return path, path.read_bytes(), tensors, meta


@FAST
@given(st.data())
def test_state_truncated_is_a_value_error_naming_the_file(tmp_path, data):
    good = _state_file(tmp_path)[1]
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(good[:data.draw(st.integers(0, len(good) - 1))])
    with pytest.raises(ValueError, match=r"cut\.safetensors"):
        read_state(bad, "myelin.importance", "importance")
    with pytest.raises(ValueError, match=r"cut\.safetensors"):
        Importance.load(bad)


@FAST
@given(st.data())
def test_state_flipped_bit_never_crashes(tmp_path, data):
    """Whatever byte flips, reading gives a ValueError (or a load): never another error type."""
    good = _state_file(tmp_path)[1]
    raw = bytearray(good)
    raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    bad = tmp_path / "flip.safetensors"
    bad.write_bytes(bytes(raw))
    with contextlib.suppress(ValueError):
        Importance.load(bad)


@FAST
@given(st.data())
@example(None)
def test_state_flipped_bit_is_a_clear_error(tmp_path, data):
    _, good, tensors, meta = _state_file(tmp_path)
    raw = bytearray(good)
    at = -5 if data is None else data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= 1 << (0 if data is None else data.draw(st.integers(0, 7)))
    bad = tmp_path / "flip.safetensors"
    bad.write_bytes(bytes(raw))
    try:
        imp = Importance.load(bad)
    except ValueError as exc:
        assert "flip.safetensors" in str(exc)
    else:
        assert _equal(dict(imp.items()), tensors) and imp.meta == meta
