"""$(VAR) expansion follows the Kubernetes rules exactly (they differ from the shell's)."""

from __future__ import annotations

import pytest

from tests.harness.podrunner.expansion import expand_with

ENV = {"A": "alpha", "B": "beta", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "alpha"),
        ("x$(A)y$(B)z", "xalphaybetaz"),
        ("$(EMPTY)-", "-"),
        ("$(UNDEFINED)", "$(UNDEFINED)"),  # undefined names stay as written
        ("$$(A)", "$(A)"),  # $$ escapes the reference
        ("$$$(A)", "$alpha"),
        ("$$", "$"),
        ("$A ${A}", "$A ${A}"),  # shell syntax is the shell's business
        ("$(A", "$(A"),  # unterminated
        ("end$", "end$"),
        ("$(A)$(A)", "alphaalpha"),
        ("$()", "$()"),
    ],
)
def test_expansion_rules(text: str, expected: str) -> None:
    assert expand_with(text, ENV) == expected


def test_expansion_is_not_recursive() -> None:
    assert expand_with("$(A)", {"A": "$(B)", "B": "no"}) == "$(B)"
