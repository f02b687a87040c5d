"""Whether a base model belongs with a Stage-1 checkpoint (and the installed text encoder): checked by `sample`
and `evaluate` right after the checkpoints are read, before any sampling, so a wrong pair costs nothing."""

from __future__ import annotations

from pathlib import Path


def check_base_encoder(base_checkpoint: str | Path, b_meta: dict, stage1_checkpoint: str | Path, s1_meta: dict) -> None:
    """ValueError naming both files when the base model was trained on latents of another encoder than this
    Stage-1 checkpoint's (checkpoint key encoder_sha256; a base model without it is not checked)."""
    if b_meta.get("encoder_sha256") is not None and b_meta["encoder_sha256"] != s1_meta.get("sha256"):
        raise ValueError(f"base model {base_checkpoint} was trained on latents of encoder "
                         f"{b_meta['encoder_sha256'][:16]}, not of {stage1_checkpoint} ({str(s1_meta.get('sha256'))[:16]}): "
                         "give the Stage-1 checkpoint its latent store was encoded with")


def check_text_encoder(base_checkpoint: str | Path, b_meta: dict) -> None:
    """ValueError when a text model was trained on the features of another text encoder than the installed one
    (checkpoint key text_encoder_sha256); hashes the weights file only, loads nothing."""
    trained_on = b_meta.get("text_encoder_sha256")
    if trained_on is None:
        return
    from ul_pipeline.text.encoder import model_dir, text_encoder_sha256

    installed = text_encoder_sha256()
    if installed != trained_on:
        raise ValueError(f"base model {base_checkpoint} was trained on features of text encoder {trained_on[:16]}, "
                         f"the installed one ({model_dir()}) is {installed[:16]}: prompts would mean something else")


def check_label(label: int | None, base, base_checkpoint: str | Path) -> None:
    """ValueError in one line for a class label the base model does not know (or any label for a model
    without classes)."""
    if label is None:
        return
    if base.num_classes == 0:
        raise ValueError(f"--label {label} given, but base model {base_checkpoint} is unconditional "
                         "(data.num_classes 0): it reads no label")
    if not 0 <= label < base.num_classes:
        raise ValueError(f"--label {label} is outside the classes [0, {base.num_classes}) of base model "
                         f"{base_checkpoint}")
