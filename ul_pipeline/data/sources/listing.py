"""Which files of a user's folder are samples, and in which class: the listing rules of every folder source.

- hidden entries are skipped everywhere: any file or folder whose name starts with '.' (`.DS_Store`,
  `.ipynb_checkpoints/`, `.git/`) and macOS's `__MACOSX/`, at the top and at any depth;
- symbolic links are followed, to files and to folders (a folder reached twice through links is
  read once);
- classes are the top-level sub-folders in natural order: digit runs compare as numbers, so `2`
  comes before `10` and `img2` before `img10`; other text compares case-insensitively. Labels are
  0, 1, ... in that order;
- files within a class are taken in plain sorted path order (their order only seeds the split).
"""

from __future__ import annotations

import os
import re
from typing import Any

from ul_pipeline.data.sample import sanitize_key
from ul_pipeline.data.storage import StorageOptions, is_local, url_to_fs

SKIPPED_NAMES = ("__MACOSX",)  # besides every name starting with '.'


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: ['1', '2', '10'], ['img2', 'img10']."""
    return tuple((0, int(part), part) if part.isdigit() else (1, part.lower(), part)
                 for part in re.split(r"(\d+)", name) if part)


def hidden(name: str) -> bool:
    return name.startswith(".") or name in SKIPPED_NAMES


def _is_dir(fs: Any, entry: dict) -> bool:
    if entry["type"] == "directory":
        return True
    return bool(entry.get("islink")) and fs.isdir(entry["name"])  # a link to a folder


def _entries(fs: Any, folder: str) -> list[tuple[str, bool]]:
    """(path, is a folder) of the visible entries of `folder`, links resolved."""
    out = []
    for e in fs.ls(folder, detail=True):
        path = e["name"].rstrip("/")
        if not hidden(path.rsplit("/", 1)[-1]):
            out.append((path, _is_dir(fs, e)))
    return out


def visible_files(fs: Any, folder: str, extensions: tuple[str, ...]) -> list[str]:
    """Every visible file below `folder` (links followed, hidden entries skipped) with one of `extensions`."""
    out, todo, seen = [], [folder], set()
    while todo:
        current = todo.pop()
        real = os.path.realpath(current) if is_local(fs) else current
        if real in seen:
            continue
        seen.add(real)
        for path, is_dir in _entries(fs, current):
            if is_dir:
                todo.append(path)
            elif path.lower().endswith(extensions):
                out.append(path)
    return sorted(out)


def class_files(url: str, storage_options: StorageOptions, what: str, extensions: tuple[str, ...],
                allow_flat: bool = False) -> tuple[Any, list[str], list[tuple[str, int, str]]]:
    """(filesystem, class names in natural order, [(path, label, key)]) of the files `url/<class>/**/<file>`.

    A key is `<class>-<path below the class, no extension>`, sanitized. With `allow_flat`, a folder
    without sub-folders is one class named '' holding its files (keys: the paths, no extension).
    Errors name `what` and the url: a missing or empty folder, no class sub-folders (unless allowed
    flat), or two files that map to the same key.
    """
    fs, root = url_to_fs(url, storage_options)
    root = root.rstrip("/")
    if not fs.isdir(root):
        raise FileNotFoundError(f"{what} {url}: not found or not a directory")
    entries = _entries(fs, root)
    classes = sorted((p.rsplit("/", 1)[-1] for p, is_dir in entries if is_dir), key=natural_key)
    kinds = "/".join(e.lstrip(".") for e in extensions)
    if not classes and allow_flat:
        paths = visible_files(fs, root, extensions)
        if not paths:
            raise ValueError(f"{what} {url}: empty (no {kinds} files; hidden files are skipped)")
        items = [(path, 0, sanitize_key(path[len(root) + 1:].rsplit(".", 1)[0])) for path in paths]
        if len({key for *_, key in items}) != len(items):
            raise ValueError(f"{what} {url}: two files map to the same key (same name, other extension)")
        return fs, [""], items
    if not classes:
        raise ValueError(f"{what} {url}: " + ("no class sub-folders" if entries else "empty"))
    items: list[tuple[str, int, str]] = []
    seen: dict[str, str] = {}
    for label, name in enumerate(classes):
        class_root = f"{root}/{name}"
        for path in visible_files(fs, class_root, extensions):
            key = sanitize_key(f"{name}-{path[len(class_root) + 1:].rsplit('.', 1)[0]}")
            if key in seen:
                raise ValueError(f"{what} {url}: files {seen[key]} and {path} map to the same key '{key}'")
            seen[key] = path
            items.append((path, label, key))
    if not items:
        raise ValueError(f"{what} {url}: empty (no {kinds} files in its class folders {classes})")
    return fs, classes, items
