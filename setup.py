"""Which packages the wheel holds (all metadata is in pyproject.toml).

`configs/` stays at the top of the repository (where experiments are edited and reviewed) and ships
inside the wheel as `ul_pipeline/configs`, so an installed package finds its experiments without a
clone (`ul_pipeline.config.schema.CONFIG_DIR`; `ul-pipeline init` copies them out for editing).
`ul_pipeline_dagster` is the Dagster code location's uniquely named entry module (see its docstring).
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["ul_pipeline*", "assets*", "resources*"]) + ["ul_pipeline.configs"],
    package_dir={"ul_pipeline.configs": "configs"},
    package_data={"ul_pipeline.configs": ["*.yaml", "**/*.yaml"]},
    py_modules=["ul_pipeline_dagster"],
)
