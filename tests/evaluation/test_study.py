"""The study of a sweep: its table and picture from a metrics history, the asset, and the CLI."""

import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from PIL import Image

from assets.partitions import sweep_of_point
from assets.study import build_study_asset, study
from resources import ComputeResource, ExperimentConfigResource, StorageResource
from ul_pipeline.cli import main as cli_main
from ul_pipeline.config import experiment_names
from ul_pipeline.evaluation.history import append_metrics_row, read_history
from ul_pipeline.evaluation.study import StudyError, study_table, write_study
from ul_pipeline.config.sweeps import load_sweep, sweep_names

REPO = Path(__file__).resolve().parents[2]
SWEEP = "sweep:\n  grid: {stage1.c_lf: [1.3, 3.0]}\n  variants:\n    normal_prior: {stage1.prior: normal}\n"
PROTOCOL = {"num_samples": 64, "steps": 8, "decoder_steps": 8, "guidance": 1.0}
ROWS = [  # appended in this order; the older c_lf=1.3 row is superseded by the later one
    {"experiment": "trends:c_lf=1.3", "bits_per_pixel": 0.9, "bits_per_image": 900.0, "psnr": 5.0, **PROTOCOL},
    {"experiment": "smoke", "bits_per_pixel": 7.0, "psnr": 1.0, **PROTOCOL},
    {"experiment": "trends:c_lf=3.0", "bits_per_pixel": 0.30, "bits_per_image": 307.2, "psnr": 21.5, "rfid": 40.0,
     "gfid": 90.0, "kid": 0.05, "kid_std": 0.01, "stage1_train_seconds": 100.0, "encode_seconds": 5.0,
     "stage2_train_seconds": 200.0, "eval_seconds": 20.0, **PROTOCOL},
    {"experiment": "trends:c_lf=1.3", "bits_per_pixel": 0.10, "bits_per_image": 102.4, "psnr": 18.0, "rfid": 60.0,
     "gfid": 110.0, "kid": 0.08, "kid_std": 0.02, "stage1_train_seconds": 90.0, "eval_seconds": 10.0, **PROTOCOL},
    {"experiment": "trends:normal_prior", "bits_per_pixel": 0.50, "bits_per_image": 512.0, "psnr": 19.0,
     "rfid": 55.0, "gfid": float("nan"), "eval_seconds": 12.0, **PROTOCOL},
]


@pytest.fixture
def config_dir(tmp_path) -> Path:
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    shutil.copy(REPO / "configs" / "base.yaml", configs / "base.yaml")
    (configs / "experiments" / "trends.yaml").write_text("stage1: {preset: tiny}\n" + SWEEP)
    return configs


@pytest.fixture
def root(tmp_path) -> Path:
    """A storage root whose metrics history holds ROWS."""
    root = tmp_path / "root"
    for row in ROWS:
        append_metrics_row(str(root / "metrics_history"), row)
    return root


def resources(root: Path, config_dir: Path) -> dict:
    return {"storage": StorageResource(root=str(root)), "compute": ComputeResource(device="cpu"),
            "experiment_config": ExperimentConfigResource(config_dir=str(config_dir))}


def test_study_table_has_one_row_per_point_from_its_latest_evaluation(config_dir, root):
    table = study_table(load_sweep("trends", config_dir), read_history(str(root / "metrics_history")))
    assert table["point"].to_list() == ["trends:c_lf=1.3", "trends:c_lf=3.0", "trends:normal_prior"]
    assert table["label"].to_list() == ["c_lf=1.3", "c_lf=3.0", "normal_prior"]
    assert table["c_lf"].to_list() == [1.3, 3.0, None] and table["variant"].to_list() == [None, None, "normal_prior"]
    assert table["bits_per_pixel"].to_list() == [0.10, 0.30, 0.50]  # the later c_lf=1.3 row wins
    assert table["bits_per_image"].to_list() == [102.4, 307.2, 512.0]
    assert table["psnr"].to_list() == [18.0, 21.5, 19.0] and table["rfid"].to_list() == [60.0, 40.0, 55.0]
    assert table["gfid"].to_list() == [110.0, 90.0, None]  # NaN is reported as missing, not as a number
    assert table["kid"].to_list() == [0.08, 0.05, None] and table["kid_std"].to_list() == [0.02, 0.01, None]
    assert table["stage1_train_seconds"].to_list() == [90.0, 100.0, None]
    assert table["stage2_train_seconds"].to_list() == [None, 200.0, None]
    assert table["wall_seconds"].to_list() == [100.0, 325.0, 12.0]  # the parts that are there
    for key, value in PROTOCOL.items():
        assert table[key].to_list() == [value] * 3, key


def test_only_rows_made_on_the_current_checkpoints_count(config_dir, root):
    history = read_history(str(root / "metrics_history"))
    sweep = load_sweep("trends", config_dir)
    rows = {r["experiment"]: r for r in history.iter_rows(named=True)}  # the last row of each point
    current = {k: {"stage1_sha256": r.get("stage1_sha256")} for k, r in rows.items()}
    current["trends:c_lf=1.3"] = {"stage1_sha256": "retrained-since"}  # its checkpoint changed after both rows
    with pytest.raises(StudyError, match=r"1 of 3 points have no evaluation made on their current checkpoints"
                                         r" in .*: trends:c_lf=1\.3$"):
        study_table(sweep, history, "h", current)


def test_write_study_writes_parquet_and_a_png(config_dir, root, tmp_path):
    result = write_study(load_sweep("trends", config_dir), str(root / "metrics_history"), tmp_path / "out")
    assert result.parquet == tmp_path / "out" / "study.parquet"
    assert pl.read_parquet(result.parquet).equals(result.table)
    with Image.open(result.png) as img:
        img.verify()
        assert img.format == "PNG" and img.width > 3 * img.height / 2  # three panels side by side


def test_a_point_without_an_evaluation_fails_naming_it(config_dir, root, tmp_path):
    with pytest.raises(StudyError, match=r"3 of 3 points have no evaluation in .*nothing: "
                                         r"trends:c_lf=1\.3, trends:c_lf=3\.0, trends:normal_prior$"):
        write_study(load_sweep("trends", config_dir), str(tmp_path / "nothing"), tmp_path / "out")
    (config_dir / "experiments" / "trends.yaml").write_text(SWEEP + "    kl_vae: {stage1.latent_weight: 0.001}\n")
    with pytest.raises(StudyError, match=r"1 of 4 points have no evaluation in .*metrics_history: "
                                         r"trends:kl_vae$"):
        write_study(load_sweep("trends", config_dir), str(root / "metrics_history"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_study_asset_invoked_directly(config_dir, root):
    out = study(context=dg.build_asset_context(partition_key="trends"), **resources(root, config_dir))
    meta = out.metadata
    assert meta["points"] == 3
    assert meta["study_parquet"].path == str(root / "runs" / "trends" / "study" / "study.parquet")
    assert Path(meta["study_png"].path).is_file() and "data:image/png;base64," in meta["study_image"].value
    table = meta["study"].value
    assert table.splitlines()[0].startswith("| label | c_lf | bits_per_pixel | bits_per_image | psnr |")
    assert "| normal_prior | – | 0.5 | 512 | 19 | 55 | – |" in table


def test_study_asset_fails_clearly_when_a_point_was_not_evaluated(config_dir, tmp_path):
    empty = tmp_path / "empty"
    with pytest.raises(dg.Failure, match=r"trends:c_lf=1.3, trends:c_lf=3.0, trends:normal_prior\. "
                                         r"Materialize evaluation for those partitions first"):
        study(context=dg.build_asset_context(partition_key="trends"), **resources(empty, config_dir))


def test_study_asset_materializes_in_process_over_its_points(config_dir, root):
    points = dg.StaticPartitionsDefinition(experiment_names(config_dir))
    asset = build_study_asset(dg.StaticPartitionsDefinition(sweep_names(config_dir)), sweep_of_point(config_dir))
    evaluation = dg.AssetSpec("evaluation", partitions_def=points)  # upstream, already materialized
    result = dg.materialize([asset, evaluation], partition_key="trends", resources=resources(root, config_dir))
    assert result.success
    (event,) = result.asset_materializations_for_node("study")
    assert event.partition == "trends" and event.metadata["points"].value == 3
    mapping = asset.get_partition_mapping(dg.AssetKey("evaluation"))  # a sweep reads all its points
    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
        asset.partitions_def.subset_with_partition_keys(["trends"]), asset.partitions_def, points)
    assert sorted(upstream.partitions_subset.get_partition_keys()) == sorted(experiment_names(config_dir))


def test_cli_study_prints_the_table_and_writes_files(config_dir, root, tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli_main(["study", "-e", str(config_dir / "experiments" / "trends.yaml"),
                     "--history", str(root / "metrics_history"), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "normal_prior" in printed and "c_lf=3.0" in printed and "21.5" in printed
    assert (out / "study.parquet").is_file() and (out / "study.png").is_file()
    assert pl.read_parquet(out / "study.parquet")["psnr"].to_list() == [18.0, 21.5, 19.0]
    with pytest.raises(SystemExit, match="no evaluation in .*nothing"):
        cli_main(["study", "-e", str(config_dir / "experiments" / "trends.yaml"),
                  "--history", str(tmp_path / "nothing"), "--out", str(out)])

