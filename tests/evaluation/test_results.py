"""Committed study results: reused when config and code match, never otherwise; the comparison built from them."""

import json

import numpy as np
import pytest
import torch

from ul_pipeline.evaluation.comparison import Pair, annotate_apart, arms, plot, verdict, write_comparison
from ul_pipeline.evaluation.results import load_result, save_result, stale_reasons
from ul_pipeline.plan.hardware import cpu_model

CONFIG = {"name": "s:a", "stage1": {"c_lf": 3.0, "prior": "diffusion", "decoder_loss": "diffusion"},
          "stage2": {"preset": "small"}, "compute": {"device": "cpu"}}
CODE = {"stage1": "s1v", "encode": "env", "stage2": "s2v"}


def commit(tmp_path, label="a", config=CONFIG, features=None, **metrics):
    ev = tmp_path / "eval" / label
    ev.mkdir(parents=True)
    if features is not None:
        np.save(ev / "generated_features.npy", features.astype(np.float16))
    return save_result(tmp_path / "results", label, f"s:{label}", config, CODE,
                       {"bits_per_pixel": 0.1, "kid_train": 0.01, "kid_train_se": 0.001, "grid": "/abs/path.png",
                        **metrics}, ev, 60.0)


def test_a_committed_result_is_reused_only_for_the_same_config_and_code(tmp_path):
    commit(tmp_path)
    r = load_result(tmp_path / "results", "a")
    assert r.record["code_versions"] == CODE and "grid" not in r.metrics  # absolute paths are not committed
    assert stale_reasons(r, CONFIG, CODE) == []
    machine = r.record["machine"]  # what it ran on, beside the numbers (not part of its identity)
    assert machine["cpu"] == cpu_model() and machine["torch_cpu_capability"] in ("DEFAULT", "AVX2", "AVX512")
    assert isinstance(machine["avx512_bf16"], bool) and (machine["gpu"] is None) == (not torch.cuda.is_available())
    assert stale_reasons(r, {**CONFIG, "compute": {"device": "cuda"}, "name": "other"}, CODE) == []  # where it ran
    changed = {**CONFIG, "stage1": {**CONFIG["stage1"], "c_lf": 6.0}}
    assert stale_reasons(r, changed, CODE) == ["config differs in stage1.c_lf 3.0 -> 6.0"]  # which key, its values
    assert stale_reasons(r, CONFIG, {**CODE, "stage2": "new"}) == ["stage2 code version s2v -> new"]
    assert load_result(tmp_path / "results", "missing") is None


def test_exporting_a_point_beside_another_writer_uses_its_own_temporary_files(tmp_path):
    # a second runner exporting the same point at the same moment had the same `.result.json.tmp`;
    # here another writer's temporary file is in the way (as a folder, so sharing its name fails)
    folder = tmp_path / "results" / "a"
    for name in (".result.json.tmp", ".generated_features.npy.tmp"):
        (folder / name).mkdir(parents=True)
    commit(tmp_path, features=np.ones((4, 8)))
    r = load_result(tmp_path / "results", "a")
    assert r.metrics["kid_train"] == 0.01 and np.load(folder / "generated_features.npy").shape == (4, 8)
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp")) == [
        ".generated_features.npy.tmp", ".result.json.tmp"]  # the other writer's, untouched; none of ours left


def test_two_exporters_of_one_point_leave_one_runs_files_not_a_mix(tmp_path, monkeypatch):
    # each file was whole, but B's features could land between A's features and A's result.json
    import threading

    import ul_pipeline.evaluation.results as results_mod

    write, b_done = results_mod.write_file_atomic, threading.Event()

    def export(kid):
        ev = tmp_path / "eval" / str(kid)
        ev.mkdir(parents=True)
        np.save(ev / "generated_features.npy", np.full((4, 8), kid))
        save_result(tmp_path / "results", "a", "s:a", CONFIG, CODE, {"kid_train": kid}, ev, 1.0)

    def a_pauses_after_its_features(path, fn):
        out = write(path, fn)
        if threading.current_thread().name == "a" and path.name == "generated_features.npy":
            b = threading.Thread(target=lambda: (export(2.0), b_done.set()))
            b.start()
            b_done.wait(2.0)  # B exports meanwhile, unless it must wait for A to finish
            a_pauses_after_its_features.b = b
        return out

    monkeypatch.setattr(results_mod, "write_file_atomic", a_pauses_after_its_features)
    a = threading.Thread(target=export, args=(1.0,), name="a")
    a.start()
    a.join()
    a_pauses_after_its_features.b.join()
    r = load_result(tmp_path / "results", "a")
    assert np.load(r.features_path)[0, 0] == r.metrics["kid_train"]


def test_an_export_killed_mid_write_leaves_temporary_files_the_next_one_removes(tmp_path):
    # a killed writer's `.<name>.<pid>-<random>.tmp` stayed for good (and `git add results/` took it)
    folder = tmp_path / "results" / "a"
    folder.mkdir(parents=True)
    left = [folder / ".generated_features.npy.999-0a1b2c3d.tmp", folder / ".result.json.999-0a1b2c3d.tmp"]
    for p in left:
        p.write_bytes(b"half")
    (folder / "notes.tmp").write_text("mine")
    commit(tmp_path, features=np.ones((4, 8)))
    assert sorted(p.name for p in folder.iterdir()) == ["generated_features.npy", "notes.tmp", "result.json"]


def test_a_code_version_declared_equivalent_with_evidence_is_accepted(tmp_path):
    commit(tmp_path)
    r = load_result(tmp_path / "results", "a")
    path = tmp_path / "results" / "equivalent_code.json"
    path.write_text(json.dumps([{"stage": "stage2", "old": "s2v", "new": "new", "evidence": ""}]))
    with pytest.raises(ValueError, match="names no evidence"):
        stale_reasons(r, CONFIG, {**CODE, "stage2": "new"})
    path.write_text(json.dumps([{"stage": "stage2", "old": "s2v", "new": "new", "evidence": "smoke weights equal"}]))
    assert stale_reasons(r, CONFIG, {**CODE, "stage2": "new"}) == []
    assert stale_reasons(r, CONFIG, {**CODE, "stage2": "other"}) != []
    # one new version may compute like several older ones (points committed at different commits)
    path.write_text(json.dumps([{"stage": "stage2", "old": "s2v", "new": "new", "evidence": "e"},
                                {"stage": "stage2", "old": "s2w", "new": "new", "evidence": "e"}]))
    assert stale_reasons(r, CONFIG, {**CODE, "stage2": "new"}) == []


def test_the_comparison_applies_the_rule_and_draws_both_plots(tmp_path):
    g = np.random.default_rng(0)
    ref = g.standard_normal((400, 8))
    noise = g.standard_normal((200, 8))
    commit(tmp_path, "a", features=noise, psnr=20.0)
    commit(tmp_path, "b", features=noise + 0.8, psnr=21.0,  # the same noise, shifted: clearly worse
           config={**CONFIG, "stage1": {**CONFIG["stage1"], "prior": "normal"}})
    commit(tmp_path, "a_seed1", features=noise * 1.01, psnr=20.1)
    results = {k: load_result(tmp_path / "results", k) for k in ("a", "b", "a_seed1")}
    # the seed spread comes from the metrics, so give the repeat a KID close to a's
    results["a_seed1"].record["metrics"]["kid_train"] = 0.0101
    summary = write_comparison(results, [Pair("a", "b", "matched"), Pair("a", "c", "not run")], [("a", "a_seed1")],
                               ref, tmp_path / "report", n_boot=200)
    first, missing = summary["comparisons"]
    assert first["kid_high"] < 0 and first["verdict"].startswith("a better")
    assert missing["verdict"].startswith("not run yet")
    assert {r["family"] for r in summary["rows"]} == {"ul", "normal"}
    for name in ("table.md", "comparisons.md", "summary.json", "kid_vs_bits.png", "kid_vs_psnr.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert "replaced" not in (tmp_path / "report" / "comparisons.md").read_text()
    # a study decided by its paired seeds says so, so the single-seed verdicts are not read as its verdicts
    write_comparison(results, [Pair("a", "b", "matched")], [("a", "a_seed1")], ref, tmp_path / "seeded", n_boot=200,
                     decided_by="seeds.md")
    text = (tmp_path / "seeded" / "comparisons.md").read_text()
    assert text.startswith("Single-seed comparisons") and "[seeds.md](seeds.md)" in text
    assert "| verdict by the single-seed rule (replaced: see seeds.md) |" in text


def test_verdicts_follow_the_stated_rule():
    c = {"a": "u", "b": "n", "kid_diff": -0.004, "kid_low": -0.006, "kid_high": -0.002}
    assert verdict(c, spread=0.001).startswith("u better")
    assert "no detectable difference" in verdict(c, spread=0.003)  # the gap is within twice the seed spread
    assert "no detectable difference" in verdict({**c, "kid_high": 0.001}, spread=0.0001)
    assert verdict({**c, "kid_diff": 0.004, "kid_low": 0.002, "kid_high": 0.006}, spread=0.001).startswith("n better")


def test_the_plots_draw_an_arm_as_its_mean_over_seeds_with_the_seed_sd():
    """Seed repeats `<point>_seed<s>` join their point's arm (a zigzag through every seed said nothing); an arm of
    one point keeps its own SE; arms of other families or without KID stay out."""
    def row(point, fam, bits, kid, se=1e-4):
        return {"point": point, "family": fam, "bits_per_pixel": bits, "kid_train": kid, "kid_train_se": se}
    rows = [row("ul_c6", "ul", 0.33, 0.020), row("ul_c6_seed1", "ul", 0.31, 0.016), row("ul_c6_seed2", "ul", 0.35, 0.018),
            row("ul_c8", "ul", 0.43, 0.021, se=9e-4), row("ul_c3_seed1", "ul", 0.10, 0.019),
            row("np_c6", "normal", 0.33, 0.019), {**row("ul_c9", "ul", 0.5, None)}]
    got = arms(rows, "ul", "bits_per_pixel")
    assert [a["arm"] for a in got] == ["ul_c3", "ul_c6", "ul_c8"]  # in order of mean rate
    c6 = got[1]
    assert len(c6["points"]) == 3 and c6["x"] == pytest.approx(0.33) and c6["kid"] == pytest.approx(0.018)
    assert c6["err"] == pytest.approx(np.std([0.020, 0.016, 0.018], ddof=1))
    assert got[2]["err"] == 9e-4 and got[0]["err"] == 1e-4  # one point each: its SE


def test_labels_of_arms_at_nearly_the_same_point_do_not_overlap():
    # ul_c6 and np_c6 sit 0.02 bits/pixel and 0.2e-3 KID apart; their labels were drawn over each other
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0.015, 0.025)
    points = [("ul_c6 (6 seeds)", (0.34, 0.01777)), ("np_c6 (6 seeds)", (0.33, 0.01758)),
              ("ul_c8", (0.43, 0.0208)), ("far away", (0.9, 0.016))]
    anns = annotate_apart(ax, points)
    renderer = fig.canvas.get_renderer()
    boxes = {a.get_text(): a.get_window_extent(renderer) for a in anns}
    names = list(boxes)
    assert all(not boxes[a].overlaps(boxes[b]) for i, a in enumerate(names) for b in names[i + 1:])
    offsets = {a.get_text(): a.xyann[1] for a in anns}
    assert offsets["ul_c6 (6 seeds)"] == 4 and offsets["np_c6 (6 seeds)"] < 4  # the lower one moved down
    assert offsets["ul_c8"] == 4 and offsets["far away"] == 4  # labels with room stay where they were


def test_the_saved_plots_labels_stay_apart_after_the_layout_makes_room_for_them(tmp_path, monkeypatch):
    # the labels were placed apart, then savefig's constrained layout narrowed the axes to fit ul_c0's label past
    # the right edge, which drew ul_c0 and kl_vae_c2 closer: their labels overlapped in the saved PNG
    from matplotlib.figure import Figure

    saved, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (saved.append(fig), save(fig, *a, **k))[1])
    rows = [{"point": p, "family": fam, "bits_per_pixel": bits, "kid_train": kid, "kid_train_se": 1e-4}
            for p, fam, bits, kid in [("ul_c0_long_label", "ul", 0.3521, 0.0175),
                                      ("normal_c1_long_label", "normal", 0.3098, 0.01732),
                                      ("kl_vae_c2_long_label", "kl_vae", 0.3427, 0.01751)]]
    plot(rows, tmp_path / "kid_vs_bits.png", "bits_per_pixel", "bits/pixel", log_x=True)
    (fig,) = saved
    fig.set_dpi(110)  # as saved, laid out again as savefig did
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    assert len(boxes) == 3 and not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert all(fig.bbox.x0 <= b.x0 and b.x1 <= fig.bbox.x1 for b in boxes)  # and none cut off at the edge
