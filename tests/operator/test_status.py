"""Condition helpers and the status merge patch (status.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from modelloop_operator.api.common import ConditionStatus
from modelloop_operator.status import get_condition, is_true, merge_patch, set_condition

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


class TestSetCondition:
    def test_adds_a_missing_condition_with_the_transition_time_now(self) -> None:
        out = set_condition([], type_="Ready", status=False, reason="Pending", message="m",
                            observed_generation=3, now=T0)
        ready = get_condition(out, "Ready")
        assert ready is not None
        assert ready.status is ConditionStatus.FALSE
        assert (ready.reason, ready.message, ready.observed_generation) == ("Pending", "m", 3)
        assert ready.last_transition_time == T0

    def test_same_status_keeps_the_transition_time_but_updates_the_rest(self) -> None:
        first = set_condition([], type_="Ready", status=False, reason="Pending",
                              observed_generation=1, now=T0)
        second = set_condition(first, type_="Ready", status=False, reason="Running",
                               message="now running", observed_generation=2, now=T1)
        ready = get_condition(second, "Ready")
        assert ready is not None
        assert ready.last_transition_time == T0
        assert (ready.reason, ready.message, ready.observed_generation) == (
            "Running", "now running", 2)

    def test_status_change_moves_the_transition_time(self) -> None:
        first = set_condition([], type_="Ready", status=False, reason="Pending",
                              observed_generation=1, now=T0)
        second = set_condition(first, type_="Ready", status=True, reason="Succeeded",
                               observed_generation=1, now=T1)
        ready = get_condition(second, "Ready")
        assert ready is not None and ready.last_transition_time == T1
        assert is_true(second, "Ready")

    def test_one_entry_per_type_sorted_and_input_untouched(self) -> None:
        base = set_condition([], type_="Ready", status=False, reason="A",
                             observed_generation=1, now=T0)
        out = set_condition(base, type_="Failed", status=False, reason="B",
                            observed_generation=1, now=T0)
        out = set_condition(out, type_="Ready", status=False, reason="C",
                            observed_generation=1, now=T0)
        assert [c.type for c in out] == ["Failed", "Ready"]
        assert len(base) == 1 and base[0].reason == "A"

    def test_idempotent(self) -> None:
        once = set_condition([], type_="Ready", status=True, reason="R",
                             observed_generation=1, now=T0)
        twice = set_condition(once, type_="Ready", status=True, reason="R",
                              observed_generation=1, now=T1)
        assert once == twice

    def test_unknown_status(self) -> None:
        out = set_condition([], type_="Ready", status=ConditionStatus.UNKNOWN, reason="R",
                            observed_generation=None, now=T0)
        assert not is_true(out, "Ready")
        assert not is_true(out, "Missing")


class TestMergePatch:
    def test_equal_objects_need_no_patch(self) -> None:
        doc = {"phase": "Running", "model": {"uri": "x"}, "conditions": [{"type": "A"}]}
        assert merge_patch(doc, dict(doc)) == {}

    def test_changed_added_and_removed_keys(self) -> None:
        old = {"phase": "Running", "message": "a", "gone": 1}
        new = {"phase": "Succeeded", "message": "a", "metrics": {"accuracy": 0.9}}
        assert merge_patch(old, new) == {"phase": "Succeeded", "gone": None,
                                         "metrics": {"accuracy": 0.9}}

    def test_nested_objects_are_diffed_key_by_key(self) -> None:
        old = {"model": {"uri": "a", "checksum": "c"}}
        new = {"model": {"uri": "b"}}
        assert merge_patch(old, new) == {"model": {"uri": "b", "checksum": None}}

    def test_lists_are_replaced_whole(self) -> None:
        old = {"labels": ["a", "b"]}
        new = {"labels": ["a"]}
        assert merge_patch(old, new) == {"labels": ["a"]}
