"""A broken experiment file is a ConfigError that names it, for every command (the loader reads it), not a traceback."""

import pytest

from ul_pipeline.cli import main
from ul_pipeline.config import ConfigError, load_config


@pytest.mark.parametrize("text,what", [("stage1: [1, 2\n", "not valid YAML"), ("- 1\n- 2\n", "YAML mapping"),
                                       ("stage1: {}\nstage1: {}\n", "not valid YAML")])
@pytest.mark.parametrize("command", ["print-config", "plan"])
def test_a_broken_experiment_file_is_a_config_error_naming_it(tmp_path, capsys, text, what, command):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=what) as e:
        load_config(str(path))
    assert str(path) in str(e.value)
    assert main([command, "-e", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and what in err and "Traceback" not in err


def test_an_empty_experiment_file_is_the_defaults(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(str(tmp_path / "empty.yaml")).stage1.c_lf == load_config(None).stage1.c_lf
