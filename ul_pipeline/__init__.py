"""ul_pipeline: Unified Latents (Heek et al., arXiv 2602.17270) as a plain PyTorch library.

Never imports dagster. The command line is `ul-pipeline --help` (or `python -m ul_pipeline`); the
notebook API is importable from here (see `ul_pipeline.api` and docs/guides/python-api.md):

    import ul_pipeline as ul
    model, cfg, meta = ul.load_stage1("runs/smoke/stage1/last.pt")  # images in and out are in [-1, 1]
    z0 = model.encode(images); x = model.decode(z0, steps=32)
    store = ul.open_store("runs/smoke/latents.zarr")
    base, _, _ = ul.load_base_model("runs/smoke/stage2/last.pt")
    x = ul.sample(model, base, labels=[0, 1, 2])

The names load on first use, so `import ul_pipeline` stays cheap (no torch) for the CLI and the
Dagster layer. They are looked up by string: the stages' code versions (ul_pipeline.versioning)
hash import closures, and this package's __init__ is in every one of them.
"""

import importlib

_API = ("BaseModel", "LatentStore", "UnifiedLatents", "load_base_model", "load_split_tensor", "load_stage1", "open_store",
        "psnr_uint8", "sample", "save_grid", "to_model_range", "to_uint8")
_EXPORTS = {**{name: "ul_pipeline.api" for name in _API}, "load_config": "ul_pipeline.config",
            "code_version": "ul_pipeline.provenance"}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    """The API's names (and `__version__`, the provenance.code_version of this copy), imported when first used."""
    if name == "__version__":
        return importlib.import_module("ul_pipeline.provenance").package_version()
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ul_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
