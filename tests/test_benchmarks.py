"""The benchmark scripts' bookkeeping (no sampling): merging table parts run at different times."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import paper_table  # noqa: E402


def _part(path: Path, methods: dict[str, float], cases=("a", "b"), steps=50, png: bool = False) -> Path:
    res = {v: {m: {"mae": mae, "rmse": mae * 1.3, "p99": mae * 4, "seconds_per_sample": 1.0}
               for m, mae in methods.items()} for v in ("t2m", "msl", "u10", "v10")}
    task = {"task": "x20", "cases": len(cases), "results": res, "steps": steps, "members": 1, "seed": 0,
            "region_px": 128, "case_list": list(cases), "checkpoint": {"sha256": "abc"},
            "guidance_scale": {m: 3.0 for m in methods if m in ("zssd", "dps")}, "seconds_total": 10.0,
            "command": "cmd", "date": "d", "machine": "m"}
    doc = {"command": f"run {sorted(methods)}", "machine": "m", "date": "d",
           "settings": {"cases": len(cases), "methods": list(methods)}, "tasks": {"x20": task},
           "spectra_png": "paper_table_spectra.png" if png else None, "seconds_total": 10.0}
    path.mkdir(parents=True)
    (path / "paper_table.json").write_text(json.dumps(doc))
    if png:
        (path / "paper_table_spectra.png").write_bytes(b"png")
    return path


def test_merge_combines_methods_and_checks_the_cases(tmp_path):
    a = _part(tmp_path / "a", {"bilinear": 1.0, "bcsd": 0.8})
    b = _part(tmp_path / "b", {"bilinear": 1.0, "zssd": 0.9, "ddrm": 0.95}, png=True)
    out = tmp_path / "out"
    assert paper_table.merge([a, b], out, "merge") == 0
    doc = json.loads((out / "paper_table.json").read_text())
    t2m = doc["tasks"]["x20"]["results"]["t2m"]
    assert set(t2m) == {"bilinear", "bcsd", "ddrm", "zssd"} and t2m["zssd"]["mae"] == 0.9
    assert doc["settings"]["methods"] == ["bilinear", "bcsd", "ddrm", "zssd"]  # canonical order
    assert len(doc["settings"]["merged_from"]) == 2 and doc["tasks"]["x20"]["steps"] == 50
    assert (out / "paper_table_spectra.png").read_bytes() == b"png"
    md = (out / "paper_table.md").read_text()
    assert "| zssd | 0.9 |" in md and "| bcsd | 0.8 |" in md

    other_cases = _part(tmp_path / "c", {"zssd": 0.9}, cases=("a", "z"))
    with pytest.raises(SystemExit, match="case_list"):
        paper_table.merge([a, other_cases], tmp_path / "out2", "merge")
    disagree = _part(tmp_path / "d", {"bilinear": 1.2})
    with pytest.raises(SystemExit, match="disagree"):
        paper_table.merge([a, disagree], tmp_path / "out3", "merge")
    assert not (tmp_path / "out3" / "paper_table.json").exists()


def test_x20_spectra_octave_ratios_finest_first():
    """A field at half the reference's amplitude has 1/4 of its power in every octave; missing octaves are NaN."""
    import numpy as np
    import xarray as xr

    import x20_spectra

    rng = np.random.default_rng(0)
    lat, lon = 30 + 0.25 * np.arange(64), 0.25 * np.arange(64)
    ref = xr.DataArray(rng.standard_normal((64, 64)), dims=("lat", "lon"), coords={"lat": lat, "lon": lon})
    assert np.allclose(x20_spectra.octave_ratios(ref, ref, 3), 1.0)
    half = x20_spectra.octave_ratios(0.5 * ref, ref, 12)
    n = sum(np.isfinite(half))
    assert 3 <= n < 12 and np.allclose(half[:n], 0.25) and np.isnan(half[n:]).all()
    # finest first: a field with only large-scale structure added is unchanged at the finest octave only
    y = np.linspace(0, 2 * np.pi, 64)
    smooth = ref + 5 * np.sin(y)[:, None] * np.sin(y)[None, :]
    r = x20_spectra.octave_ratios(smooth, ref, n)
    assert abs(r[0] - 1) < 0.05 and r[n - 1] > 2


def test_real_guidance_table_fills_untuned_steps_by_the_real_to_demo_ratio():
    import tune_guidance

    demo = {"zssd": {"20": 6.0, "50": 3.0, "100": 3.0}}
    table, filled = tune_guidance.fill_steps({"zssd": {"50": 4.5}}, demo)
    assert table["zssd"] == {"50": 4.5, "20": pytest.approx(9.0), "100": pytest.approx(4.5)}
    assert set(filled["zssd"]) == {"20", "100"}
    assert tune_guidance.fill_steps({"zssd": {"50": 4.5}}, {}) == ({"zssd": {"50": 4.5}}, {})  # no demo table


def _without_timing(x):
    if isinstance(x, dict):
        return {k: _without_timing(v) for k, v in x.items() if k != "seconds_per_sample"}
    return x


def test_shards_merge_into_the_whole_runs_table_seed_for_seed(tmp_path, tiny):
    """Two shards of a 3-case list (tiny prior, 2 steps, 2 members) give, merged, exactly the one-run scores;
    shards that overlap or leave a case out are refused."""
    from zssd_engine.evaluate import evaluate

    kw = dict(task="x20", methods=["bilinear", "zssd"], cases=3, steps=2, members=2, size_px=24, prior=tiny,
              guidance_scales={"zssd": 3.0})
    whole = evaluate(**kw)
    parts = {name: evaluate(**kw, case_indices=idx) for name, idx in (("b", [2]), ("a", [0, 1]))}
    assert parts["a"]["case_indices"] == [0, 1] and parts["a"]["case_list_of"] == 3 and parts["a"]["cases"] == 2
    assert parts["a"]["case_list"] == whole["case_list"][:2]
    dirs = {}
    for name, res in parts.items():
        res["command"] = f"shard {name}"
        doc = {"command": f"shard {name}", "machine": "m", "date": "d", "tasks": {"x20": res},
               "settings": {"cases": 3, "methods": ["bilinear", "zssd"]}, "seconds_total": 1.0}
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        (dirs[name] / "paper_table.json").write_text(json.dumps(doc))
    assert paper_table.merge_shards([dirs["b"], dirs["a"]], tmp_path / "m", "merge") == 0
    merged = json.loads((tmp_path / "m" / "paper_table.json").read_text())["tasks"]["x20"]
    whole = json.loads(json.dumps(whole))
    for k in ("results", "rank_hist", "cyclones", "results_by_members", "per_case", "paired", "case_list", "cases"):
        assert _without_timing(merged[k]) == _without_timing(whole[k]), k
    assert [s["case_indices"] for s in merged["shards"]] == [[0, 1], [2]]
    # zssd against bilinear, case by case (the strongest baseline run here)
    per = whole["per_case"]["t2m"]
    diff = [z - b for z, b in zip(per["zssd"]["mae"], per["bilinear"]["mae"])]
    pr = whole["paired"]["t2m"]["zssd"]["mae"]
    assert whole["paired"]["baseline"]["t2m"] == "bilinear" and pr["cases"] == 3
    assert pr["mean_diff"] == pytest.approx(sum(diff) / 3) and pr["lower_in"] == sum(d < 0 for d in diff)
    assert "Case by case against the strongest baseline" in (tmp_path / "m" / "paper_table.md").read_text()
    with pytest.raises(SystemExit, match="exactly once"):
        paper_table.merge_shards([dirs["a"], dirs["a"]], tmp_path / "m2", "merge")
    with pytest.raises(SystemExit, match="exactly once"):
        paper_table.merge_shards([dirs["a"]], tmp_path / "m3", "merge")
    with pytest.raises(ValueError, match="0..2"):
        evaluate(**kw, case_indices=[3])
    assert paper_table.shard_indices("2/2", 32) == list(range(16, 32))
    with pytest.raises(SystemExit, match="K/N"):
        paper_table.shard_indices("2", 32)
    # the real-weather table merges its shards the same way (its JSON keeps the tasks under "results")
    import real_table

    names = []
    for name, res in parts.items():
        f = tmp_path / f"rt_{name}.json"
        f.write_text(json.dumps({"command": f"shard {name}", "date": "d", "machine": {},
                                 "settings": {"cases": 3, "methods": ["bilinear", "zssd"], "name": str(f)},
                                 "results": {"x20": res}}))
        names.append(str(f))
    assert real_table.main(["--merge-shards", ",".join(names), "--name", str(tmp_path / "rt")]) == 0
    rt = json.loads((tmp_path / "rt.json").read_text())
    assert rt["settings"]["cases"] == 3 and rt["settings"]["shard"] is None
    for k in ("results", "per_case", "case_list"):
        assert _without_timing(rt["results"]["x20"][k]) == _without_timing(whole[k]), k
    with pytest.raises(SystemExit, match="exactly once"):
        real_table.main(["--merge-shards", names[0], "--name", str(tmp_path / "rt2")])


def test_bc_posthoc_corrections_do_what_they_say():
    """``cell_projector`` with λ = 1 puts the field's unified-cell means exactly on the target's (λ = 0.5 half-way);
    ``part_shift`` moves each land/sea part's mean onto the target's and keeps the pixels' deviations."""
    import numpy as np
    import torch

    import bc_posthoc
    from zssd_engine.grids import Region, era5_grid
    from zssd_engine.operators import conservative
    from zssd_engine.samplers.observation import ucg_coarse_grid

    fine = era5_grid().select(Region(-3.0, 5.0, 2.0, 10.0))[0]
    coarse = ucg_coarse_grid(fine, 2.5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=fine.shape)
    y = torch.as_tensor(rng.normal(size=coarse.shape))
    c = conservative(fine, coarse, dtype=torch.float64)
    c_x = c(torch.as_tensor(x))
    project = bc_posthoc.cell_projector(fine, coarse)
    torch.testing.assert_close(c(torch.as_tensor(project(x, y, 1.0))), y)
    torch.testing.assert_close(c(torch.as_tensor(project(x, y, 0.5))), 0.5 * (c_x + y))
    land = (rng.random(fine.shape) > 0.5).astype(float)
    parts = bc_posthoc.land_sea_parts(fine, coarse, land)
    assert parts.max() + 1 <= 2 * coarse.shape[0] * coarse.shape[1]
    assert all(len(np.unique(land[parts == k])) == 1 for k in np.unique(parts))  # a part is all land or all sea
    target = rng.normal(size=fine.shape)
    out = bc_posthoc.part_shift(x, target, parts, 1.0)
    n = np.bincount(parts.ravel())
    np.testing.assert_allclose(np.bincount(parts.ravel(), out.ravel()) / n,
                               np.bincount(parts.ravel(), target.ravel()) / n)
    dev = lambda a: a - (np.bincount(parts.ravel(), a.ravel()) / n)[parts]  # noqa: E731
    np.testing.assert_allclose(dev(out), dev(x))


def test_method_parts_merge_into_the_whole_runs_table(tmp_path, tiny):
    """Two runs of different methods on the same 3 cases (tiny prior) merge into exactly the table of one run
    with all the methods: per-case lists, paired differences, rank counts and first-k scores recomputed
    over all methods, not copied from the first part."""
    from zssd_engine.evaluate import evaluate

    kw = dict(task="x20", cases=3, steps=2, members=2, size_px=24, prior=tiny, guidance_scales={"zssd": 3.0})
    whole = json.loads(json.dumps(evaluate(methods=["bilinear", "lapse", "zssd"], **kw)))
    dirs = []
    for name, methods in (("base", ["bilinear", "lapse"]), ("diff", ["bilinear", "zssd"])):
        res = evaluate(methods=methods, **kw)
        doc = {"command": name, "machine": "m", "date": "d", "tasks": {"x20": res},
               "settings": {"cases": 3, "methods": methods}, "seconds_total": 1.0}
        dirs.append(tmp_path / name)
        dirs[-1].mkdir()
        (dirs[-1] / "paper_table.json").write_text(json.dumps(doc))
    assert paper_table.merge(dirs, tmp_path / "m", "merge") == 0
    merged = json.loads((tmp_path / "m" / "paper_table.json").read_text())["tasks"]["x20"]
    for k in ("results", "rank_hist", "results_by_members", "per_case", "paired"):
        assert _without_timing(merged[k]) == _without_timing(whole[k]), k
    assert merged["paired"]["baseline"]["t2m"] == "lapse" and "zssd" in merged["paired"]["t2m"]


def test_bc_guidance_case_sets_keep_to_training_years_and_their_boxes():
    """The ``bc_guidance`` case sets that choose sub-cell options: training years only, never a time the
    correction trains on, in the boxes asked for; relief boxes do have the relief cells asked for."""
    import bc_guidance
    from bc_grid import is_correction_training_time

    from zssd_engine import pipeline as P
    from zssd_engine.demo_world import HELDOUT_YEARS
    from zssd_engine.grids import era5_grid
    from zssd_engine.samplers.observation import ucg_coarse_grid
    from zssd_engine.samplers.subcell import MIN_RELIEF_STD_M, cell_labels
    from zssd_engine.statics import load_statics

    boxes = "-22.25,9.75,-94.5,-62.5;-51.5,-19.5,-78.5,-46.5"
    cases = bc_guidance.box_training_cases(boxes, 3, seed=0)
    assert [c.name for c in cases] == [f"train-box{b}-{k:02d}" for b in (1, 2) for k in (1, 2, 3)]
    assert [c.region.as_text() for c in cases] == [b for b in boxes.split(";") for _ in range(3)]
    assert all(c.time.year not in HELDOUT_YEARS and not is_correction_training_time(c.time) for c in cases)
    assert cases == bc_guidance.box_training_cases(boxes, 3, seed=0)  # seeded
    (relief,) = bc_guidance.relief_training_cases(1, 0, 64, P.get_world(0), 4, 2.5)
    fine = era5_grid().select(relief.region)[0]
    lab = cell_labels(fine, ucg_coarse_grid(fine, 2.5))
    dem = load_statics().region(fine)[0]
    relief_cells = sum(dem[lab == c].std() >= MIN_RELIEF_STD_M for c in np.unique(lab))
    assert relief.time.year not in HELDOUT_YEARS and relief_cells >= 4
