"""A report folder that cannot be written (a read-only checkout or mount): the report stops before any work with
an error naming the folder, and the report already there stays as it was."""

from __future__ import annotations

import os
import subprocess

import pytest

from ul_pipeline.evaluation.report_files import ReportWriteError, staged_report


@pytest.fixture
def read_only(tmp_path):
    """A folder holding a previous report, then made read-only (chmod; as root, a read-only tmpfs mount)."""
    folder = tmp_path / "docs with späces" / "study"
    if os.geteuid() != 0:
        folder.mkdir(parents=True)
        (folder / "seeds.md").write_text("the previous report\n")
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    folder.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("root without mount: no way to make a read-only folder here")
    try:
        (folder / "seeds.md").write_text("the previous report\n")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_read_only_report_folder_fails_before_the_body_naming_the_folder(read_only):
    ran = []
    with pytest.raises(ReportWriteError, match="cannot write the report") as e:
        with staged_report(read_only) as staging:
            ran.append(staging)  # the report's work: must not be spent on files that cannot be kept
    assert str(read_only) in str(e.value) and ran == []
    assert (read_only / "seeds.md").read_text() == "the previous report\n"
    assert sorted(p.name for p in read_only.iterdir()) == ["seeds.md"]


def test_a_report_folder_that_cannot_be_created_is_named(read_only):
    with pytest.raises(ReportWriteError, match="cannot write the report") as e:
        with staged_report(read_only / "new" / "report"):
            pass
    assert str(read_only / "new" / "report") in str(e.value)


def test_a_writable_folder_with_unicode_and_spaces_gets_the_report(tmp_path):
    out = tmp_path / "résultats d'étude" / "latent study"
    with staged_report(out) as staging:
        (staging / "seeds.md").write_text("new\n")
    assert sorted(p.name for p in out.iterdir()) == ["seeds.md"] and (out / "seeds.md").read_text() == "new\n"
