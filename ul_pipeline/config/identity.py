"""Config keys added after results were committed, and the config as every hash of it sees it."""

from __future__ import annotations

# keys added after results were committed, at the value that computes what the code did before they existed: left
# out of every hash of a config (results, shards' data_sha256, run folders) at that value, so a new switch left at
# its default keeps committed results, shards and runs standing
ADDED_KEYS_AT_DEFAULT = {("stage2", "text_conditioning"): "none", ("stage1", "rate_control"): "integral",
                         ("sample", "decoder_clip"): True, ("sample", "reconstruction_draws"): 1,
                         ("data", "background"): "white", ("sample", "guidance_interval"): None}


def without_added_defaults(config: dict) -> dict:
    """A resolved config (or one section of it, keyed by section name) without ADDED_KEYS_AT_DEFAULT at default."""
    out = dict(config)
    for (section, key), default in ADDED_KEYS_AT_DEFAULT.items():
        if isinstance(out.get(section), dict) and out[section].get(key, default) == default:
            out[section] = {k: v for k, v in out[section].items() if k != key}
    return out
