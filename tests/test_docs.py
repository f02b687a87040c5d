"""The documentation cannot rot: its quick commands run, its generated references cover the code, its links resolve.

`mkdocs build --strict` (in `.ci/run`) checks the site's own links and API references; these tests check
what the build cannot: that the getting-started commands work as written, that the generated pages miss
no config key or CLI command, and that the README (outside the site) links to files that exist.
"""

import dataclasses
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import docs_reference  # noqa: E402

MARKER = "<!-- tested: tests/test_docs.py runs the next block line by line -->"


def quick_commands(page: Path) -> list[str]:
    """The shell lines of the bash block right after MARKER on `page` (comments dropped)."""
    text = page.read_text()
    assert MARKER in text, f"{page}: the tested block's marker is gone"
    block = re.search(r"```bash\n(.*?)```", text[text.index(MARKER):], re.S)
    assert block, f"{page}: no bash block after the marker"
    lines = [ln.split("  #")[0].strip() for ln in block.group(1).splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").exists(), reason="needs the embedded dataset")
def test_getting_started_quick_commands_run_as_written(tmp_path):
    commands = quick_commands(REPO / "docs" / "getting-started.md")
    assert len(commands) >= 3
    venv_bin = Path(sys.executable).parent  # the page's `.venv/bin/` is this interpreter's folder here
    env = {**os.environ, "PYTHONPATH": str(REPO), "UL_STORAGE_ROOT": str(tmp_path / "artifacts")}
    for line in commands:
        argv = shlex.split(line)
        assert argv[0].startswith(".venv/bin/"), line
        argv[0] = str(venv_bin / argv[0].removeprefix(".venv/bin/"))
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        if "print-config" in line:
            assert "c_lf: 1.7" in done.stdout, done.stdout
    assert (tmp_path / "artifacts" / "cli" / "smoke_shards" / "manifest.parquet").exists()


def leaf_keys(cls, prefix=""):
    for f in dataclasses.fields(cls):
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            yield from leaf_keys(sub, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name


def test_config_reference_has_every_schema_key_with_a_meaning():
    from ul_pipeline.config.schema import ExperimentConfig

    page = docs_reference.config_keys_markdown()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([\w.]+)` \| [^|]* \| (.*) \|$", page, re.M)}
    keys = list(leaf_keys(ExperimentConfig))
    assert len(keys) > 80 and set(keys) == set(rows)
    assert not [k for k in keys if not rows[k].strip()], "keys without a comment in schema.py"
    assert "global batch" in rows["stage2.train.batch_size"]


def test_comment_reader_attaches_continuations_and_group_notes():
    src = ("class C:\n    a: int = 1  # first\n    # more about a\n\n    # a note on the group\n"
           "    b: int = 2  # b's own\n\n    # c, described above it\n    c: int = 3\n")
    got = docs_reference._comments(src)["C"]
    assert got == {"a": ("first more about a", ""), "b": ("b's own", "a note on the group"),
                   "c": ("c, described above it", "")}


def test_cli_reference_lists_every_command_and_option():
    from ul_pipeline.cli import build_parser

    page = docs_reference.cli_markdown()
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, parser in sub.choices.items():
        assert f"### `{name}`" in page
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}`" in page, (name, flag)


def test_readme_is_a_front_door_whose_links_resolve():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    # CI's check reads the quick start's two commands
    assert "bash scripts/quickstart.sh" in text and ".venv/bin/python -m pytest" in text
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert len(links) > 10
    missing = [link for link in links if "://" not in link and not (REPO / link).exists()]
    assert not missing, missing


def test_no_file_refers_to_the_shared_folder_outside_the_repository():
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    patterns = ("../" + "shared", "UL_" + "METHOD")  # split, so this file does not match itself
    texts = {f: (REPO / f).read_text(errors="ignore") for f in files
             if f.endswith((".py", ".md", ".yaml", ".yml", ".sh", ".toml")) and (REPO / f).is_file()}
    offenders = [f for f, text in texts.items() if any(p in text for p in patterns)]
    assert offenders == [] and (REPO / "docs" / "concepts" / "method.md").is_file()
