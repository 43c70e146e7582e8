import json
import os

import pytest

from myelin.records import RecordStore, canonical


def test_a_record_is_reused_only_for_its_spec(tmp_path):
    store = RecordStore(tmp_path / "runs")
    spec = {"method": "ewc", "lam": 10.0, "seeds": (0, 1)}
    assert store.get("lam=10/seed=0", spec) is None and "lam=10/seed=0" not in store
    store.put("lam=10/seed=0", spec, {"aa": 0.9})
    assert store.get("lam=10/seed=0", spec) == {"spec": canonical(spec), "aa": 0.9}
    assert store.get("lam=10/seed=0", {**spec, "importance": "signal"}) is None
    assert "importance" in store.stale["lam=10/seed=0"]
    assert list(store.keys()) == ["lam=10/seed=0"]
    assert json.loads((tmp_path / "runs" / "lam=10" / "seed=0.json").read_text())["aa"] == 0.9


def test_records_without_spec_or_broken_are_not_reused(tmp_path):
    store = RecordStore(tmp_path)
    (tmp_path / "old.json").write_text('{"aa": 1}')
    assert store.get("old", {"a": 1}) is None and "no spec" in store.stale["old"]
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not a JSON record"):
        store.read("broken")
    with pytest.raises(ValueError, match="relative path"):
        store.path("../escape")
    with pytest.raises(ValueError, match="given separately"):
        store.put("x", {}, {"spec": 1})


def test_an_unreadable_record_is_stale_and_named(tmp_path):
    store = RecordStore(tmp_path)
    for name, text in (("empty", ""), ("list", "[1]")):
        (tmp_path / f"{name}.json").write_text(text)
        assert store.get(name, {"a": 1}) is None
        assert store.stale[name].startswith(f"unreadable record: {tmp_path / name}.json: ")
    store.put("empty", {"a": 1}, {"aa": 0.5})                   # the re-run replaces it
    assert store.get("empty", {"a": 1})["aa"] == 0.5 and "empty" not in store.stale


def test_the_lock_admits_one_holder_and_names_the_directory(tmp_path):
    from myelin.records import StoreLockedError

    store = RecordStore(tmp_path / "sweep")
    with store.lock():
        assert (tmp_path / "sweep" / ".lock").exists()
        with pytest.raises(StoreLockedError) as err, RecordStore(tmp_path / "sweep").lock():
            pass
        assert repr(str(tmp_path / "sweep")) in str(err.value)
        assert f"pid {os.getpid()}" in str(err.value)
        assert list(store.keys()) == []                           # the lock is no record
    with RecordStore(tmp_path / "sweep").lock():                  # released
        pass
