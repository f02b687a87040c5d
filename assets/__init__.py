"""The Dagster layer: UL's lifecycle as partitioned assets (one partition per experiment YAML).

Wiring lives in `assets.definitions`; each module here is one stage and stays thin: resolve the
experiment, call one `ul_pipeline.lifecycle` function, return metadata.
"""

# a step process of `dagster job execute` (a multiprocessing child) ends with its parent, armed as early as this
# package is imported, before any step work (resources/lifeline.py; a no-op in every other process)
from resources.lifeline import stop_with_parent as _stop_with_parent  # noqa: E402

_stop_with_parent()
