"""The UL lifecycle as plain functions: shards -> Stage 1 -> latent store -> Stage 2 -> evaluation.

The CLI (`python -m ul_pipeline`) and the Dagster assets are two thin fronts on these functions;
the last step, evaluation, lives in ul_pipeline.evaluation. Paths of checkpoints and evaluation
outputs are local folders; shards and latent stores may live on any fsspec URL (local or s3://)
with `storage_options` for credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from omegaconf import DictConfig

from ul_pipeline import config as config_lib
from ul_pipeline import distributed
from ul_pipeline.latents.extract import extract_latents
from ul_pipeline.data import load_split_tensor, read_manifest, write_shards
from ul_pipeline.latents.store import open_store
from ul_pipeline.latents.text_features import ensure_text_features, stored_captions
from ul_pipeline.text.encoder import TextEncoder, text_encoder_sha256
from ul_pipeline.data.sources import build_source
from ul_pipeline.data.storage import StorageOptions
from ul_pipeline.latents.encode import encoder_fn
from ul_pipeline.train.checkpoint import unfinished_note
from ul_pipeline.train.loop import Callback, TrainResult, resolve_device
from ul_pipeline.train.tensorboard import TensorBoardLog
from ul_pipeline.previews import reconstruction_picture, sample_picture
from ul_pipeline.stage1.batches import stage1_batches
from ul_pipeline.stage1.training import load_stage1, train_stage1_from
from ul_pipeline.stage2.batches import stage2_batches
from ul_pipeline.stage2.training import train_stage2_from
from ul_pipeline.versioning import RunChoice, choose_run_dir, stage_code_version
from ul_pipeline.config.sweeps import data_sha256

Progress = Callable[[int, int], None]


def make_shards(cfg: DictConfig, shards_url: str, *, storage_options: StorageOptions = None,
                overwrite: bool = False, progress: Progress | None = None):
    """Write the configured source as train/val WebDataset shards + manifest (with the data section's
    hash, `data_sha256`); returns the manifest."""
    d = cfg.data
    source = build_source(d.source, d.uri, resolution=d.resolution, channels=d.channels,
                          storage_options=storage_options, frames=d.frames, fps=d.fps, seed=d.seed,
                          background=d.background, unconditional=d.num_classes == 0)
    names = getattr(source, "class_names", None)
    if names and d.num_classes and len(names) > d.num_classes:  # before any decoding: name the folders
        raise ValueError(f"{d.source} {d.uri} has {len(names)} class folders ({', '.join(names)}) but "
                         f"data.num_classes is {d.num_classes}")
    return write_shards(source, shards_url, shard_size=d.shard_size, val_size=d.val_size, seed=d.seed,
                        resolution=d.resolution, channels=d.channels, num_classes=d.num_classes, limit=d.limit,
                        storage_options=storage_options, overwrite=overwrite, progress=progress,
                        frames=d.frames, data_sha256=data_sha256(cfg),
                        class_names=names)


def check_shards_match(cfg: DictConfig, manifest) -> None:
    """The shards' resolution/channels/classes must be the config's; name both on mismatch."""
    want = (cfg.data.resolution, cfg.data.channels, cfg.data.num_classes, cfg.data.frames)
    have = (manifest.resolution, manifest.channels, manifest.num_classes, manifest.frames)
    if want != have:
        raise ValueError(f"shards {manifest.url} hold (resolution, channels, classes, frames) {have}; "
                         f"config data.resolution/data.channels/data.num_classes/data.frames say {want}")
    made_from, data = manifest.data_sha256, data_sha256(cfg)
    if made_from is not None and made_from != data:
        raise ValueError(f"shards {manifest.url} were written from another data section (data_sha256 "
                         f"{made_from[:12]}, this config's is {data[:12]}): point at the shards of this config")


def stage1_run(cfg: DictConfig, shards_url: str, run_dir: str | Path, *,
               storage_options: StorageOptions = None) -> RunChoice:
    """Where Stage 1 of `cfg` on these shards trains: run_dir, or a sibling when a complete run there differs."""
    manifest = read_manifest(shards_url, storage_options)
    return choose_run_dir(run_dir, "stage1", config_lib.to_dict(cfg), stage_code_version("stage1"),
                          {"dataset_manifest_sha256": manifest.sha256})


def note_sibling(requested: str | Path, choice: RunChoice, log: Callable[[str], None] | None) -> None:
    """Say (through `log`) where a run goes and which key differs when it is not the folder asked for."""
    if log is not None and Path(choice.run_dir) != Path(requested):
        log(f"{requested} holds another run, so this one uses the sibling folder {choice.run_dir}: {choice.describe()}")


def run_stage1(cfg: DictConfig, shards_url: str, run_dir: str | Path, *, storage_options: StorageOptions = None,
               callbacks: Iterable[Callback] = (), log: Callable[[str], None] | None = None) -> TrainResult:
    """Stage 1 on the train split (in RAM, or streamed: data.in_memory) in the folder `stage1_run` picks
    (resume, reuse or afresh; `log` hears why when that is a sibling folder)."""
    manifest = read_manifest(shards_url, storage_options)
    check_shards_match(cfg, manifest)
    choice = stage1_run(cfg, shards_url, run_dir, storage_options=storage_options)
    note_sibling(run_dir, choice, log)
    run_dir = choice.run_dir
    batches = stage1_batches(cfg, shards_url, storage_options=storage_options)
    if cfg.compute.tensorboard:  # the picture: the first training images (read alone, also when streaming)
        first = load_split_tensor(shards_url, "train", storage_options=storage_options, limit=8)[0]
        callbacks = [*callbacks, TensorBoardLog(run_dir, "stage1", reconstruction_picture(
            first, resolve_device(cfg.compute.device)))]
    return train_stage1_from(cfg, batches, run_dir, callbacks,
                        extra={"dataset_manifest_sha256": manifest.sha256, "shards_url": shards_url,
                               "stage_code_version": stage_code_version("stage1")})


def encode_latents(stage1_checkpoint: str | Path, shards_url: str, store_url: str, *, split: str = "train",
                   cfg: DictConfig | None = None, storage_options: StorageOptions = None,
                   store_storage_options: StorageOptions = None, progress: Progress | None = None,
                   warn: Callable[[str], None] | None = None):
    """Encode a split into a Zarr latent store (resumable); `cfg` supplies encode.* (default: the checkpoint's).
    Captioned shards also get their captions' text features in the store (ul_pipeline.latents.text_features).

    An unfinished Stage-1 checkpoint is encoded with a warning through `warn` (default: printed); the
    store records `stage1_complete`.
    """
    device = resolve_device(cfg.compute.device if cfg is not None else "auto")
    model, stage1_cfg, meta = load_stage1(stage1_checkpoint, device=device)
    note = unfinished_note(stage1_checkpoint, meta)
    if note is not None and distributed.world().is_main:
        (warn or (lambda message: print(f"WARNING: {message}")))(note)
    distributed.init(device, (cfg or stage1_cfg).compute.dist_timeout_s)  # blocks split over torchrun ranks
    enc = (cfg or stage1_cfg).encode
    store_meta = {"encoder_sha256": meta["sha256"], "stage1_config": config_lib.to_dict(stage1_cfg),
                  "logsnr_0": float(stage1_cfg.stage1.logsnr_0), "latent_shape": list(model.latent_shape),
                  "stage1_checkpoint": str(stage1_checkpoint), "code_version": meta.get("code_version"),
                  "encode_code_version": stage_code_version("encode"), "stage1_complete": note is None}
    hflip = bool(stage1_cfg.data.hflip)  # the encoder's own training data decides, not the caller's config
    store_meta["hflip"] = hflip
    # video frame prediction: also the encoding of the context as sampling gives it (ul_pipeline/latents/encode.py)
    context_frames = int((cfg or stage1_cfg).stage2.context_frames) if len(model.image_shape) == 4 else 0
    if context_frames:
        store_meta["context_frames"] = context_frames
    encode = encoder_fn(model, device, enc.batch_size, hflip, context_frames)
    store = extract_latents(shards_url, split, store_url, encode, store_meta,
                            block_size=enc.block_size, batch_size=enc.batch_size, dtype=enc.dtype,
                            storage_options=storage_options, store_storage_options=store_storage_options,
                            progress=progress)
    if read_manifest(shards_url, storage_options).captions:  # captioned shards: the captions' text features too
        if distributed.world().is_main:  # once per encoder: a store that has them is left as it is
            ensure_text_features(store_url, shards_url, TextEncoder(device=device), storage_options=storage_options,
                                 store_storage_options=store_storage_options, batch_size=enc.batch_size, warn=warn)
        distributed.barrier()
    return store


def run_stage2(cfg: DictConfig, store_url: str, run_dir: str | Path, *, expect_encoder_sha256: str | None = None,
               storage_options: StorageOptions = None, callbacks: Iterable[Callback] = (),
               log: Callable[[str], None] | None = None) -> TrainResult:
    """Stage 2 on a complete latent store (in RAM, or streamed: data.in_memory; noise is drawn per step, never stored);
    `log` hears why when the run goes to a sibling folder."""
    store = open_store(store_url, expect_encoder_sha256, storage_options=storage_options)
    choice = stage2_run(cfg, store, run_dir)
    note_sibling(run_dir, choice, log)
    run_dir = choice.run_dir
    stored_logsnr_0 = float(store.meta["logsnr_0"])
    if stored_logsnr_0 != cfg.stage1.logsnr_0:
        raise ValueError(f"latent store {store_url} has logsnr_0={stored_logsnr_0}, config stage1.logsnr_0="
                         f"{cfg.stage1.logsnr_0}: the base model's most precise level must match the encoder's")
    batches = stage2_batches(cfg, store)  # z_clean, labels, and z_logvar / z_clean_hflip when the store has them
    standardization = store.standardization() if cfg.stage2.standardize else None
    extra = {"latent_store_url": store_url, "encoder_sha256": store.meta["encoder_sha256"],
             "dataset_manifest_sha256": store.meta.get("dataset_manifest_sha256"),
             "encode_seconds": store.meta.get("encode_seconds"), "stage_code_version": stage_code_version("stage2")}
    text = None
    if cfg.stage2.text_conditioning != "none":  # prompts must be encoded by the encoder the model learned from
        extra["text_encoder_sha256"] = text_encoder_sha256()
        text = stored_captions(store, extra["text_encoder_sha256"], slice(0, 8))
    if cfg.compute.tensorboard:
        picture = sample_picture(store.meta.get("stage1_checkpoint") or "", cfg.data.num_classes,
                                 resolve_device(cfg.compute.device), len(store.latent_shape), text=text)
        callbacks = [*callbacks, TensorBoardLog(run_dir, "stage2", picture)]
    return train_stage2_from(cfg, batches, store.latent_shape, run_dir, callbacks, standardization=standardization,
                             extra=extra)


def stage2_run(cfg: DictConfig, store, run_dir: str | Path) -> RunChoice:
    """Where Stage 2 of `cfg` on this opened latent store trains (see ul_pipeline.versioning).

    A text model's captions are an input too: it never continues (complete) or resumes (unfinished) a run
    trained on the features of another text encoder; that run stays as it is and this one goes to its sibling.
    """
    inputs = {"encoder_sha256": store.meta["encoder_sha256"],
              "dataset_manifest_sha256": store.meta.get("dataset_manifest_sha256")}
    if cfg.stage2.text_conditioning != "none":
        inputs["text_encoder_sha256"] = text_encoder_sha256()
    return choose_run_dir(run_dir, "stage2", config_lib.to_dict(cfg), stage_code_version("stage2"), inputs)
