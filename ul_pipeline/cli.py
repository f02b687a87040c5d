"""`python -m ul_pipeline <command>`: a thin front on ul_pipeline.lifecycle and .evaluation, local or s3://.

Every command takes `--experiment NAME|FILE.yaml` and trailing `key=value` config overrides,
validated before any compute; `init` and `fetch-assets` set up an installed package (ul_pipeline.install).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from ul_pipeline.config import ConfigError, load_config, to_yaml
from ul_pipeline.console import progress_bar as _progress
from ul_pipeline.sample_command import cmd_sample


def storage_options_from_env() -> dict | None:
    """fsspec options for s3:// from UL_S3_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""
    from ul_pipeline.data.storage import s3_options_from_env

    return s3_options_from_env()


def _config(args) -> "DictConfig":  # noqa: F821
    return load_config(args.experiment, args.overrides)


def cmd_print_config(args) -> None:
    print(to_yaml(_config(args)), end="")


def cmd_shard(args) -> None:
    from ul_pipeline.lifecycle import make_shards

    cfg = _config(args)
    m = make_shards(cfg, args.out, storage_options=storage_options_from_env(), overwrite=args.overwrite,
                    progress=_progress("shard"))
    print(f"wrote {m.num_samples('train')} train + {m.num_samples('val')} val samples to {args.out} "
          f"(manifest sha256 {m.sha256})")
    if m.class_names is not None:  # the label map, also in the manifest's class_names column
        print("labels: " + ", ".join(f"{i}={name}" for i, name in enumerate(m.class_names)))
    elif m.num_classes == 0:
        print("unconditional (data.num_classes: 0): every sample has label 0")


def cmd_stage1(args) -> None:
    from ul_pipeline.lifecycle import run_stage1
    from ul_pipeline.train.progress import ProgressBar

    result = run_stage1(_config(args), args.shards, args.out, storage_options=storage_options_from_env(),
                        callbacks=[ProgressBar("stage1")], log=_note)
    print(json.dumps({"checkpoint": str(result.checkpoint), **result.history[-1]}, indent=2))


def cmd_encode(args) -> None:
    from ul_pipeline.lifecycle import encode_latents

    cfg = _config(args) if args.experiment else None
    store = encode_latents(args.checkpoint, args.shards, args.out, split=args.split, cfg=cfg,
                           storage_options=storage_options_from_env(), progress=_progress("encode"))
    print(f"latent store {args.out}: {store.meta['num_samples']} x {store.meta['latent_shape']} complete")


def cmd_stage2(args) -> None:
    from ul_pipeline.lifecycle import run_stage2
    from ul_pipeline.train.progress import ProgressBar

    result = run_stage2(_config(args), args.latents, args.out, storage_options=storage_options_from_env(),
                        callbacks=[ProgressBar("stage2")], log=_note)
    print(json.dumps({"checkpoint": str(result.checkpoint), **result.history[-1]}, indent=2))


def cmd_reconstruct(args) -> None:
    import torch

    from ul_pipeline.data import load_split_tensor
    from ul_pipeline.diffusion.solvers import decoder_sampler
    from ul_pipeline.evaluation.image import save_grid
    from ul_pipeline.evaluation.metrics import psnr_uint8, to_float, to_uint8
    from ul_pipeline.stage1.training import load_stage1

    ul, cfg, _ = load_stage1(args.stage1)
    images, _, _ = load_split_tensor(args.shards, args.split, storage_options=storage_options_from_env())
    images = images[:args.num]
    g = torch.Generator().manual_seed(args.seed)
    recon = to_uint8(ul.reconstruct(to_float(images), args.decoder_steps or cfg.sample.decoder_steps, generator=g,
                                    sampler=decoder_sampler(cfg.sample), draws=cfg.sample.reconstruction_draws))
    path = save_grid(torch.stack([images, recon], 1).flatten(0, 1), args.out, nrow=16)
    print(f"PSNR {psnr_uint8(images, recon).mean().item():.2f} dB on {len(images)} images; wrote {path}")


def cmd_evaluate(args) -> None:
    from ul_pipeline.evaluation.image import evaluate

    cfg = _config(args) if args.experiment else None
    result = evaluate(args.stage1, args.shards, args.out, base_checkpoint=args.base, cfg=cfg,
                      storage_options=storage_options_from_env(), history_url=args.history, prompts=args.prompt)
    print(json.dumps(result, indent=2))


def cmd_study(args) -> None:
    import polars as pl

    from ul_pipeline.data.storage import artifact_root, join_url, runs_folder
    from ul_pipeline.evaluation.study import StudyError, summary_columns, write_study
    from ul_pipeline.config.sweeps import load_sweep

    sweep = load_sweep(args.experiment)
    history = args.history or join_url(artifact_root(), "metrics_history")  # the storage resource's layout
    try:
        result = write_study(sweep, history, args.out or runs_folder() / sweep.name / "study", storage_options_from_env())
    except StudyError as e:
        raise SystemExit(f"study: {e}") from None
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        print(result.table.select(summary_columns(result.table)))
    print(f"wrote {result.parquet} and {result.png}")


def _note(message: str) -> None:  # notes beside the result on stdout (which stays one JSON document)
    print(message, file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ul_pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure (anywhere on the line)")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, fn, help, experiment_required=True):
        c = sub.add_parser(name, help=help)
        c.add_argument("--experiment", "-e", required=experiment_required, default=None,
                       help="experiment name under configs/experiments/ or a YAML path")
        c.add_argument("overrides", nargs="*", help="config overrides, e.g. stage1.c_lf=1.7")
        c.set_defaults(fn=fn)
        return c

    command("print-config", cmd_print_config, "print the resolved, validated config")
    c = command("shard", cmd_shard, "write the dataset as WebDataset shards + Parquet manifest")
    c.add_argument("--out", required=True, help="shard folder (local path or s3:// URL)")
    c.add_argument("--overwrite", action="store_true")
    c = command("stage1", cmd_stage1, "train encoder + prior + decoder (resumes from OUT/last.pt)")
    c.add_argument("--shards", required=True)
    c.add_argument("--out", required=True, help="run folder (local)")
    c = command("encode", cmd_encode, "encode a split into a Zarr latent store (resumable)", False)
    c.add_argument("--checkpoint", required=True, help="Stage-1 last.pt")
    c.add_argument("--shards", required=True)
    c.add_argument("--out", required=True, help="latent store URL, e.g. latents.zarr")
    c.add_argument("--split", default="train")
    c = command("stage2", cmd_stage2, "train the base model on a latent store (resumes from OUT/last.pt)")
    c.add_argument("--latents", required=True)
    c.add_argument("--out", required=True)
    c = command("sample", cmd_sample, "sample images: base model -> z0 -> decoder (sample.* from --experiment, "
                "else the Stage-1 checkpoint's config)", False)
    c.add_argument("--stage1", required=True)
    c.add_argument("--base", required=True)
    c.add_argument("--num", type=int, default=None, help="samples (default 64; with --prompt: per prompt, default 4)")
    c.add_argument("--label", type=int, default=None, help="one class for all (default: cycle the classes, sample i "
                   "of class i mod num_classes)")
    c.add_argument("--prompt", action="append", default=[],
                   help="text models: a caption to sample (repeat for more); the grid shows each beside its samples")
    c.add_argument("--steps", type=int, default=None)
    c.add_argument("--decoder-steps", type=int, default=None)
    c.add_argument("--guidance", type=float, default=None, help="default: the config's sample.guidance")
    c.add_argument("--eta", type=float, default=None, help="base sampler noise (default: sample.eta)")
    c.add_argument("--decoder-eta", type=float, default=None,
                   help="decoder sampler noise (default: sample.decoder_eta)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", default="samples.png", help="a .png: the grid only; a folder: grid.png, one PNG per sample "
                   "(sample_0000.png, ... in sampling order) and samples.npz (uint8 images N x H x W x C, labels or "
                   "prompts, seeds)")
    c = command("reconstruct", cmd_reconstruct, "reconstruct held-out images: x -> z0 -> decoder", False)
    c.add_argument("--stage1", required=True)
    c.add_argument("--shards", required=True)
    c.add_argument("--split", default="val")
    c.add_argument("--num", type=int, default=32)
    c.add_argument("--decoder-steps", type=int, default=None)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", default="reconstructions.png")
    c = command("evaluate", cmd_evaluate, "bits/pixel, PSNR, rFID, gFID/KID and grids", False)
    c.add_argument("--stage1", required=True)
    c.add_argument("--base", default=None)
    c.add_argument("--shards", required=True)
    c.add_argument("--out", required=True, help="output folder for grids and metrics.json")
    c.add_argument("--history", default=None, help="Parquet metrics history to append to")
    c.add_argument("--prompt", action="append", default=[], help="text models: a prompt to add to prompts_grid.png")
    __import__("ul_pipeline.plan.command").plan.command.register(command, _config)  # `plan`: ul_pipeline/plan
    c = command("study", cmd_study, "a sweep's points side by side: table + bits/pixel vs PSNR, rFID, gFID")
    c.add_argument("--history", default=None,
                   help="metrics history folder, one Parquet object per evaluation (default: {$UL_STORAGE_ROOT or artifacts}/metrics_history)")
    c.add_argument("--out", default=None, help="folder for study.parquet and study.png (default: {runs}/NAME/study)")
    from ul_pipeline.install import add_commands

    add_commands(sub)  # init, fetch-assets
    return p


# failures a user causes (a missing or incomplete shard set, a bad config, a checkpoint or store that does
# not fit): the library's messages name the file or key, so one line says it all. CheckpointError is a
# RuntimeError, ShardError/LatentStoreError/ConfigError are ValueErrors, missing files are OSErrors.
EXPECTED = (ValueError, OSError, RuntimeError, FloatingPointError)


def main(argv: list[str] | None = None) -> int:
    """Run one command; an expected failure prints one line (`--debug`: the traceback) and returns non-zero."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    from ul_pipeline import distributed

    quiet = (contextlib.redirect_stdout(open(os.devnull, "w")) if not distributed.env_world().is_main
             else contextlib.nullcontext())  # under torchrun, rank 0 prints the result
    try:
        with quiet:
            args.fn(args)
    except ConfigError as e:
        if debug:
            raise
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except EXPECTED as e:
        if debug:
            raise
        message = " ".join(str(e).split()) if "\n" not in str(e).strip() else str(e).strip()
        print(f"error: {message} ({type(e).__name__}; rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
