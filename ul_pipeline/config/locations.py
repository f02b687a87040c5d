"""Where experiment configs are read from: yours, an installed wheel's, or a clone's.

A wheel carries the repository's `configs/` inside the package (`ul_pipeline/configs`, see setup.py),
so `ul-pipeline print-config -e smoke` works without a clone; `ul-pipeline init DIR` copies them out
for editing and `UL_CONFIG_DIR=DIR/configs` makes that copy the one read.
"""

from __future__ import annotations

import os
from pathlib import Path

# where configs are found when a package is installed from a wheel: configs/ ships inside it (setup.py)
PACKAGED_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# a clone's configs/, at the top of the repository
REPOSITORY_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def default_config_dir() -> Path:
    """$UL_CONFIG_DIR (your own folder with a base.yaml and experiments/*.yaml, e.g. from `ul-pipeline init`),
    else the configs inside an installed wheel, else the repository's configs/ (a clone)."""
    if os.environ.get("UL_CONFIG_DIR"):
        return Path(os.environ["UL_CONFIG_DIR"]).resolve()
    if (PACKAGED_CONFIG_DIR / "base.yaml").is_file():
        return PACKAGED_CONFIG_DIR
    return REPOSITORY_CONFIG_DIR.resolve()


# the experiments (and Dagster's partitions), read when the package is imported
CONFIG_DIR = default_config_dir()
