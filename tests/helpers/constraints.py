"""The installed dependency closure of a distribution, and the exact pins of a constraints file (for tests/test_constraints.py)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name


def read_pins(path: Path) -> dict[str, str]:
    """`name==version` lines (comments and blanks skipped) -> {canonical name: version}; anything else is an error."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:  # -e, -r, a --hash option: no `name==version` (was a bare error, no line)
            req = None
        spec = list(req.specifier) if req else []
        # `==2.*` lets 2.2.0 in, and pip refuses extras in a constraints file
        if (len(spec) != 1 or spec[0].operator != "==" or spec[0].version.endswith(".*") or req.marker or req.url
                or req.extras):
            raise ValueError(f"{path.name}:{number}: {line!r} is not an exact pin (name==version)")
        name = canonicalize_name(req.name)
        if name in pins:
            raise ValueError(f"{path.name}:{number}: {name} pinned twice")
        pins[name] = spec[0].version
    return pins


def closure(name: str, extras: set[str] = frozenset()) -> set[str]:
    """Canonical names of `name` and every installed distribution it requires (with `extras`), transitively.

    A requirement whose marker is false here is not followed; one whose marker holds must be installed.
    """
    seen: set[str] = set()
    todo = [(canonicalize_name(name), frozenset(extras))]
    done: set[tuple[str, frozenset]] = set()
    while todo:
        dist_name, dist_extras = todo.pop()
        if (dist_name, dist_extras) in done:
            continue
        done.add((dist_name, dist_extras))
        seen.add(dist_name)
        for line in metadata.requires(dist_name) or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in dist_extras] or [{"extra": ""}]
            if req.marker and not any(req.marker.evaluate(env) for env in envs):
                continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return seen
