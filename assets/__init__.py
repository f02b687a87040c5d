"""The Dagster layer: UL's lifecycle as partitioned assets (one partition per experiment YAML).

Wiring lives in `assets.definitions`; each module here is one stage and stays thin: resolve the
experiment, call one `ul_pipeline.lifecycle` function, return metadata.
"""
