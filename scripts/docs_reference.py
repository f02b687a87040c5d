"""Generated reference pages: the configuration keys from the schema, the CLI from its parsers.

Nothing here is committed as Markdown: `mkdocs build` calls `on_page_markdown` (mkdocs.yml `hooks:`),
which replaces the markers `<!-- generated: config-keys -->` and `<!-- generated: cli -->` in a page
with what the schema (`ul_pipeline/config/schema.py`, its dataclasses and their comments) and the
argparse parsers (`ul_pipeline/cli.py`) say at build time, so the pages cannot drift from the code.
`python scripts/docs_reference.py config-keys|cli` prints one of them.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "ul_pipeline" / "config" / "schema.py"
MARKERS = {"<!-- generated: config-keys -->": "config_keys_markdown", "<!-- generated: cli -->": "cli_markdown"}


def _cell(text: str) -> str:
    """Text for one table cell: pipes escaped, and `<` outside code spans too (not an HTML tag)."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts)).strip()


def _comments(source: str) -> dict[str, dict[str, tuple[str, str]]]:
    """Per dataclass, per field: (its comment, a group note written above it), read from the source.

    A field's comment is the comment on its line plus the comment-only lines right below it; a comment
    block with a blank line above it belongs to the field below it (its description when the field has
    no comment of its own, else a note on the group of fields it opens).
    """
    lines = source.splitlines()
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = [n for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
        per: dict[str, tuple[str, str]] = {}
        for i, f in enumerate(fields):
            own = lines[f.end_lineno - 1].partition("  # ")[2].strip()
            j = f.end_lineno  # 0-based index of the line below the field
            while own and j < len(lines) and lines[j].strip().startswith("#"):
                own += " " + lines[j].strip().lstrip("#").strip()
                j += 1
            above, k = [], f.lineno - 2
            while k >= 0 and lines[k].strip().startswith("#"):
                above.insert(0, lines[k].strip().lstrip("#").strip())
                k -= 1
            # comment lines directly under the previous field are its continuation, not ours
            if above and k >= 0 and lines[k].strip() and i > 0 and k + 1 == fields[i - 1].end_lineno:
                above = []
            note = " ".join(above)
            if note and not own:
                own, note = note, ""
            per[f.target.id] = (own, note)
        out[node.name] = per
    return out


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
    else:
        return ""
    return "`None`" if value is None else f"`{value!r}`"


def config_keys_markdown() -> str:
    """One table per config section: every key of the schema with its default and its comment."""
    from ul_pipeline.config import schema

    comments = _comments(SCHEMA.read_text())
    parts: list[str] = []

    def table(prefix: str, cls: type, title: str) -> None:
        parts.append(f"### {title}\n")
        rows: list[str] = []

        def flush() -> None:
            if rows:
                parts.append("| key | default | meaning |\n|---|---|---|\n" + "\n".join(rows) + "\n")
                rows.clear()

        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
                continue  # a nested section: its own table
            own, note = comments.get(cls.__name__, {}).get(f.name, ("", ""))
            if note:
                flush()
                parts.append(_cell(note) + "\n")
            rows.append(f"| `{prefix}{f.name}` | {_default(f)} | {_cell(own)} |")
        flush()

    top = schema.ExperimentConfig
    table("", top, "Top level")
    for f in dataclasses.fields(top):
        factory = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if factory is not None and dataclasses.is_dataclass(factory):
            table(f"{f.name}.", factory, f"`{f.name}`")
            for g in dataclasses.fields(factory):
                sub = g.default_factory if g.default_factory is not dataclasses.MISSING else None
                if sub is not None and dataclasses.is_dataclass(sub):
                    table(f"{f.name}.{g.name}.", sub, f"`{f.name}.{g.name}`")
    return "\n".join(parts)


def _flags(action: argparse.Action) -> str:
    if action.option_strings:
        names = ", ".join(f"`{s}`" for s in action.option_strings)
        if action.nargs != 0:
            names += f" `{(action.metavar or action.dest).upper()}`"
        return names
    return f"`{action.metavar or action.dest}`" + (" ..." if action.nargs in ("*", "+") else "")


def _parser_table(parser: argparse.ArgumentParser) -> str:
    rows = []
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        required = "yes" if a.required and a.nargs not in ("*", "?") else ""
        default = "" if a.default in (None, [], False, argparse.SUPPRESS) or a.required else f"`{a.default!r}`"
        rows.append(f"| {_flags(a)} | {required} | {default} | {_cell(a.help or '')} |")
    return "| argument | required | default | meaning |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"


def cli_markdown() -> str:
    """The CLI's commands, each with its usage line and arguments, from `ul_pipeline.cli.build_parser`."""
    from ul_pipeline.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps usage lines at the terminal's width: the same on every machine
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    parts = [f"```text\n{parser.format_usage().strip()}\n```\n", "Options for every command:\n",
             _parser_table(parser)]
    for name, cmd in sub.choices.items():
        parts.append(f"### `{name}`\n\n{_cell(helps.get(name) or '')}\n\n"
                     f"```text\n{cmd.format_usage().strip()}\n```\n\n{_parser_table(cmd)}")
    return "\n".join(parts)


def on_page_markdown(markdown: str, **_kwargs) -> str:
    """mkdocs hook: fill in the generated sections of a page."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the checkout's package, as the docs describe it
    for marker, fn in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, globals()[fn]())
    return markdown


if __name__ == "__main__":
    which = {"config-keys": config_keys_markdown, "cli": cli_markdown}
    if len(sys.argv) != 2 or sys.argv[1] not in which:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(which)}")
    sys.path.insert(0, str(REPO))
    print(which[sys.argv[1]]())
