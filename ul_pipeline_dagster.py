"""The Dagster code location under a name no user folder takes.

    dagster dev -m ul_pipeline_dagster
    dagster job execute -m ul_pipeline_dagster -j smoke
    python -m ul_pipeline_dagster sweep_runner NAME [...]     # = assets/sweep_runner.py, safely

The Dagster layer is two top-level packages, `assets` and `resources`, at the top of the repository
where the design puts them. Those names are generic, and Dagster (like `python -m` and `python -c`)
puts the working directory first on `sys.path`: run from a folder that holds a folder named
`assets/` (a web project, a game, a data set), `-m assets.definitions` imports that folder instead
and fails with "No module named 'assets.definitions'" or, worse, loads something else.

This module binds the names `assets` and `resources` to the packages installed beside it (in a
clone: the repository's own folders) before anything imports them, whatever the working
directory holds. If another module already took either name in this process, it refuses with an
ImportError that names both paths instead of loading a mixture. Renaming the packages would have
broken every import of `assets.*` in the layer, its tests and users' code for a problem that only
the entry point has; the torchrun and Slurm steps the layer launches already run from the folder
the packages live in (assets/launch.py), so they are not exposed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent  # the folder that holds assets/ and resources/ (site-packages or a clone)
LAYER = ("resources", "assets")  # assets imports resources
COMMANDS = ("sweep_runner", "pipes_entry")  # the layer's modules that run as programs


class ShadowedLayerError(ImportError):
    """A module named `assets` or `resources` other than ul-pipeline's own is already imported."""


def _check(name: str) -> bool:
    """True when `name` is already ul-pipeline's own package; ShadowedLayerError when it is another module."""
    init = HERE / name / "__init__.py"
    loaded = sys.modules.get(name)
    if loaded is None:
        if not init.is_file():
            raise ShadowedLayerError(f"ul-pipeline's Dagster layer is incomplete: {init} is missing (reinstall it)")
        return False
    where = Path(getattr(loaded, "__file__", None) or "<no file>")
    if where.resolve() != init.resolve():
        raise ShadowedLayerError(
            f"ul-pipeline's Dagster layer needs its package {name!r} from {init.parent}, but this process already "
            f"imported another module named {name!r} from {where} (a folder named {name}/ in the working directory "
            f"or on PYTHONPATH?). Load the code location with `-m ul_pipeline_dagster` before anything imports "
            f"{name!r}, or rename that folder.")
    return True


def _load(name: str) -> None:
    """sys.modules[name] = ul-pipeline's package `name`, loaded from HERE whatever sys.path says."""
    init = HERE / name / "__init__.py"
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def bind_layer() -> None:
    """Bind `resources` and `assets` to ul-pipeline's own packages; ShadowedLayerError (before loading
    anything) when another module already holds either name."""
    missing = [name for name in LAYER if not _check(name)]
    for name in missing:
        _load(name)


bind_layer()
defs = importlib.import_module("assets.definitions").defs  # what `dagster ... -m ul_pipeline_dagster` loads


def main(argv: list[str]) -> int:
    """`python -m ul_pipeline_dagster COMMAND ARGS...`: run one of the layer's programs with the layer bound."""
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m ul_pipeline_dagster {{{'|'.join(COMMANDS)}}} ARGS...", file=sys.stderr)
        return 2
    return importlib.import_module(f"assets.{argv[0]}").main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
