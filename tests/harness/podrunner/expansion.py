"""Kubernetes `$(VAR)` expansion, as applied to env values, command, args and subPathExpr.

Rules (the API reference's and the kubelet's): `$(NAME)` is replaced by the variable's
value when NAME is defined, and left exactly as written when it is not; `$$` is an escaped
`$`, so `$$(NAME)` yields the literal `$(NAME)`; a `$` followed by anything else is kept;
an unterminated `$(` is kept. Shell syntax (`$NAME`, `${NAME}`) is not touched: that is
the shell's job inside the container.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Expands `$(VAR)` references in `text`; `lookup` returns None for undefined names."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char != "$" or i + 1 >= n:
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:
                # Unterminated: keep "$(" and carry on scanning after it.
                out.append("$(")
                i += 2
                continue
            name = text[i + 2 : close]
            value = lookup(name)
            out.append(f"$({name})" if value is None else value)
            i = close + 1
        else:
            out.append(char + nxt)
            i += 2
    return "".join(out)


def expand_with(text: str, *mappings: Mapping[str, str]) -> str:
    """Expands against the first mapping that defines each name."""

    def lookup(name: str) -> str | None:
        for mapping in mappings:
            if name in mapping:
                return mapping[name]
        return None

    return expand(text, lookup)
