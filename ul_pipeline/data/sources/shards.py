"""Existing WebDataset shards as a source: re-shard them (images refitted to the config, clips as stored)."""

from __future__ import annotations

from typing import Iterator

from ul_pipeline.data.codecs import convert_array
from ul_pipeline.data.sample import Sample
from ul_pipeline.data.storage import StorageOptions, join_url, url_to_fs


class ShardSource:
    """Samples of existing WebDataset shards: a folder with a `manifest.parquet` (all splits in
    manifest order), a folder of `*.tar` files (sorted), or one `.tar` URL. Iterable only."""

    def __init__(self, url: str, *, resolution: int, channels: int, storage_options: StorageOptions = None,
                 fit: str = "crop"):
        self.url, self.resolution, self.channels, self.fit = url, resolution, channels, fit
        self.storage_options = storage_options

    def shard_urls(self) -> list[str]:
        from ul_pipeline.data.manifest import MANIFEST_NAME, read_manifest

        fs, root = url_to_fs(self.url, self.storage_options)
        if root.endswith(".tar"):
            return [self.url]
        if fs.exists(f"{root.rstrip('/')}/{MANIFEST_NAME}"):
            manifest = read_manifest(self.url, self.storage_options)
            return [join_url(self.url, s) for s in manifest.table["shard"].to_list()]
        names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False) if p.endswith(".tar"))
        if not names:
            raise FileNotFoundError(f"shard source {self.url}: no manifest.parquet and no .tar files")
        return [join_url(self.url, n) for n in names]

    def __iter__(self) -> Iterator[Sample]:
        from ul_pipeline.data.shards import iter_tar_samples, read_shard_bytes

        for shard_url in self.shard_urls():
            data = read_shard_bytes(shard_url, self.storage_options)
            for s in iter_tar_samples(data, shard_url):
                image = (s.image if s.image.ndim == 4  # a clip: re-sharded as stored, checked on write
                         else convert_array(s.image, self.resolution, self.channels, fit=self.fit))
                info = {"source": "shards", "shard": shard_url, "original_size": list(s.image.shape[1:])}
                yield Sample(s.key, image, s.label, info, s.caption)
