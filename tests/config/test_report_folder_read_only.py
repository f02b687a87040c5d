"""`sweep_runner --report-only` into a read-only report folder: a clear error naming it, exit status 2, before the
KID reference (half an hour on a fresh clone) is computed, and the previous report left as it was."""

from __future__ import annotations

from types import SimpleNamespace

import assets.sweep_runner as runner
from tests.evaluation.test_report_files import read_only  # noqa: F401 (the fixture)


def test_report_only_into_a_read_only_folder_stops_before_the_reference(read_only, monkeypatch, capsys):  # noqa: F811
    computed = []
    monkeypatch.setattr(runner, "report_results", lambda *a, **k: {"ul_c6": object()})
    monkeypatch.setattr(runner, "training_reference", lambda *a, **k: computed.append(1))
    code = runner.main(["latent_study", "--results", "results/latent_study", "--report-only",
                        "--report", str(read_only)])
    err = capsys.readouterr().err
    assert code == 2 and computed == [] and f"error: {read_only}: cannot write the report" in err
    assert (read_only / "seeds.md").read_text() == "the previous report\n"


def test_write_report_names_the_folder(read_only, monkeypatch):  # noqa: F811
    monkeypatch.setattr(runner, "report_results", lambda *a, **k: {"ul_c6": object()})
    sweep = SimpleNamespace(compare=(), seeds=None, name="s")
    try:
        runner.write_report(sweep, "results", str(read_only / "sub"), (None, SimpleNamespace(config_dir=None), None),
                            print)
    except OSError as e:
        assert str(read_only / "sub") in str(e)
    else:
        raise AssertionError("no error")
