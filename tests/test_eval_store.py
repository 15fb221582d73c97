"""A run folder's records are reused by another run under the same protocol — by the same rule that lets a folder
resume, so a folder made before a setting existed still counts while that setting is left off."""

from __future__ import annotations

import pytest

from yollava.eval.store import ProtocolMismatch, RunStore

OLD = {"task": "qa", "data": {"n_easy_negatives": 60}}  # made before scene_negatives existed


def _store_with_a_record(path, protocol):
    store = RunStore(path, protocol)
    store.append({"task": "qa", "method": "yollava", "subject": "bo", "accuracy": 0.5})
    return store


def test_a_setting_added_later_and_left_off_still_reuses(tmp_path):
    _store_with_a_record(tmp_path / "old", OLD)
    now = RunStore(tmp_path / "new", {"task": "qa", "data": {"n_easy_negatives": 60, "scene_negatives": 0}})
    reused = now.reusable_records([tmp_path / "old"])
    assert reused[("yollava", "bo")]["reused_from"] == str(tmp_path / "old")
    # resuming in the old folder follows the same rule
    RunStore(tmp_path / "old", {"task": "qa", "data": {"n_easy_negatives": 60, "scene_negatives": 0}})


def test_a_setting_turned_on_or_changed_does_not(tmp_path):
    _store_with_a_record(tmp_path / "old", OLD)
    assert RunStore(tmp_path / "on", {"task": "qa", "data": {"n_easy_negatives": 60, "scene_negatives": 1}}).reusable_records([tmp_path / "old"]) == {}
    assert RunStore(tmp_path / "changed", {"task": "qa", "data": {"n_easy_negatives": 30}}).reusable_records([tmp_path / "old"]) == {}
    with pytest.raises(ProtocolMismatch, match="scene_negatives"):
        RunStore(tmp_path / "old", {"task": "qa", "data": {"n_easy_negatives": 60, "scene_negatives": 1}})
