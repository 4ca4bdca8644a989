"""``zssd`` command line: cases, downscale (end to end, errors, interruption), evaluate."""

from __future__ import annotations

import json
import os

import pytest
import xarray as xr

from zssd_engine import pipeline as P
from zssd_engine.cli import main
from zssd_engine.variables import VARIABLES

from conftest import DEMO_REGION as REGION, DEMO_TIME as TIME, ROOT


def test_every_subcommand_is_wired(capsys):
    """``zssd NAME --help`` answers for every sub-command (and only those); ``zssd`` alone is a usage error."""
    from zssd_engine.cli import SUBCOMMANDS

    assert set(SUBCOMMANDS) == {"cases", "downscale", "evaluate", "train", "batch", "serve"}
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0 and out.startswith(f"usage: zssd {name}"), (name, out[:80])
    for argv in ([], ["nope"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and "serve" in err and "downscale" in err


def test_argument_parsing_lives_in_engine_cli_only():
    """Every sub-command is a module of ``engine/cli/``; the engine modules it calls parse no arguments."""
    import ast
    import importlib
    from pathlib import Path

    import zssd_engine
    from zssd_engine.cli import SUBCOMMANDS

    root = Path(zssd_engine.__file__).parent
    for name, mod in SUBCOMMANDS.items():
        m = importlib.import_module(mod)
        assert Path(m.__file__).parent == root / "cli", name
        assert callable(m.add_parser) and callable(m.run), name
    for name in ("zssd_engine.pipeline", "zssd_engine.evaluate", "zssd_engine.batch", "zssd_engine.prior.train", "zssd_engine.readers"):
        m = importlib.import_module(name)
        assert not hasattr(m, "add_parser") and not hasattr(m, "run"), name
    pure = [root / "evaluate.py", root / "prior" / "train.py", *sorted((root / "pipeline").glob("*.py")),
            *sorted((root / "batch").glob("*.py"))]
    for f in pure:
        tree = ast.parse(f.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "argparse" not in imported, f"{f} imports argparse"
        defs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert not defs & {"add_parser", "run", "main"}, f"{f} defines {defs & {'add_parser', 'run', 'main'}}"


def _downscale(out, *extra, gcm="x6", method="bilinear", region=REGION, time=TIME):
    return main(["downscale", "--gcm", gcm, "--time", time, "--region", region, "--method", method,
                 "--out", str(out), *extra])


def test_cases_prints_lines(capsys):
    assert main(["cases"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) > 5
    assert lines[0].split("\t")[0] == "name"
    # the real ERA5 cyclone comes first, labelled real, then the demo world's held-out storms
    name, basin, t, region, *_, source = lines[1].split("\t")
    assert name.startswith("ERA5-TC") and t.startswith("2026-03-2") and source == "real (ERA5-x20)"
    for line in lines[2:]:
        name, basin, t, region, *_, source = line.split("\t")
        assert t[:4] in ("2021", "2022", "2023") and len(region.split(",")) == 4
        assert source == "demo world (synthetic)"


@pytest.mark.parametrize("method", ["bilinear", "bcsd"])
def test_downscale_baselines_write_valid_files(method, tmp_path, capsys):
    out = tmp_path / f"{method}.nc"
    assert _downscale(out, method=method) == 0
    assert "wrote" in capsys.readouterr().out
    ds = xr.open_dataset(out)
    for v in VARIABLES:
        assert ds[v].shape == (1, 16, 16) and ds[v].attrs["units"]
    assert ds.attrs["method"] == method and ds.attrs["region"] == REGION and "downscale" in ds.attrs["history"]
    ds.close()
    assert os.listdir(tmp_path) == [out.name]


def test_downscale_zssd_with_tiny_prior(tmp_path):
    out = tmp_path / "z.nc"
    assert _downscale(out, "--steps", "3", "--members", "2", "--seed", "4", "--checkpoint", "tiny",
                      "--variables", "t2m,u10", "--guidance-scale", "2", method="zssd") == 0
    ds = xr.open_dataset(out)
    assert set(ds.data_vars) >= {"t2m", "t2m_spread", "t2m_members", "u10"} and "msl" not in ds
    assert ds.sizes["member"] == 2 and ds.attrs["seed"] == 4 and ds.attrs["steps"] == 3
    assert float(ds.attrs["guidance_scale"]) == 2.0
    ds.close()


@pytest.mark.parametrize("argv,match", [
    (dict(gcm="NOPE"), "unknown GCM"),
    (dict(method="magic"), "unknown method"),
    (dict(extra=("--steps", "0"), method="zssd"), "at least 1"),
    (dict(extra=("--variables", "t2m,snow")), "unknown variable"),
    (dict(region="12,13,122,123", gcm="x20"), "smaller than one"),
    (dict(gcm="MPI-ESM-LR", time="2021-08-01"), "outside the time range"),
    (dict(gcm="MPI-ESM-LR", time="2005-08-01", method="bcsd"), "BCSD cannot be trained"),
    (dict(extra=("--checkpoint", "/nonexistent/x.safetensors"), method="zssd"), "not found"),
    (dict(extra=("--guidance-scale", "2")), "zssd, zssd-bc and dps only"),
])
def test_downscale_errors_before_compute(argv, match, tmp_path, capsys):
    out = tmp_path / "bad.nc"
    extra = argv.pop("extra", ())
    rc = _downscale(out, *extra, **argv)
    err = capsys.readouterr().err
    assert rc == 2 and "zssd: error:" in err and match in err
    assert os.listdir(tmp_path) == []


def test_interrupt_mid_run_leaves_no_file(tmp_path, monkeypatch, capsys):
    real = P.sampler

    def interrupted(*a, **k):
        gen = real(*a, **k)

        def wrapped():
            for i, st in enumerate(gen):
                if i == 1:
                    raise KeyboardInterrupt
                yield st
        return wrapped()

    monkeypatch.setattr(P, "sampler", interrupted)
    out = tmp_path / "z.nc"
    rc = _downscale(out, "--steps", "4", "--checkpoint", "tiny", method="zssd")
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_failure_during_write_leaves_no_file(tmp_path, monkeypatch):
    def boom(self, path, *a, **k):
        open(path, "wb").close()
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", boom)
    with pytest.raises(OSError):
        _downscale(tmp_path / "b.nc")
    assert os.listdir(tmp_path) == []


def test_evaluate_small(tmp_path, capsys):
    out = tmp_path / "e.json"
    rc = main(["evaluate", "--task", "x6", "--methods", "bilinear,ddrm", "--cases", "2", "--steps", "2",
               "--region-px", "16", "--checkpoint", "tiny", "--json", str(out), "--quiet"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "| bilinear |" in table and "| ddrm |" in table
    res = json.loads(out.read_text())
    assert res["task"] == "x6" and res["cases"] == 2
    assert set(res["results"]) == set(VARIABLES)
    for v in VARIABLES:
        assert set(res["results"][v]) == {"bilinear", "ddrm"}
        for m in ("bilinear", "ddrm"):
            assert set(res["results"][v][m]) == {"mae", "rmse", "p99", "seconds_per_sample", "crps", "energy"}
            if m == "bilinear":  # one member: CRPS = MAE, energy score = area RMSE
                r = res["results"][v][m]
                assert r["crps"] == pytest.approx(r["mae"]) and r["energy"] == pytest.approx(r["rmse"], rel=1e-4)
    # the demo catalog cyclone case is scored as a cyclone (x6 keeps the storm in the input)
    assert set(res["cyclones"]["summary"]) == {"bilinear", "ddrm"}
    assert res["cyclones"]["summary"]["bilinear"]["samples"] == 1
    assert res["case_list"][0].split()[1][:4] in ("2021", "2022", "2023")
    assert {"command", "machine", "date", "steps", "guidance_scale", "checkpoint"} <= set(res)


def test_evaluate_rejects_bad_task(tmp_path, capsys):
    rc = main(["evaluate", "--task", "gcm:MPI-ESM-LR", "--methods", "bilinear", "--cases", "1",
               "--json", str(tmp_path / "e.json")])
    assert rc == 2 and "paired" in capsys.readouterr().err


def test_train_command_line_overrides_reach_the_config(monkeypatch):
    """`zssd train --max-minutes --data-workers --steps --out --init-from` override the TOML (the GPU script uses
    them)."""
    from zssd_engine.cli import train as cli_train

    seen = {}
    monkeypatch.setattr(cli_train, "train", lambda cfg, **kw: seen.update(cfg=cfg, **kw))
    cfg_file = ROOT / "configs" / "demo_prior_v5_gpu.toml"
    assert cli_train.main(["--config", str(cfg_file), "--max-minutes", "1.5", "--data-workers", "3", "--steps", "7",
                           "--out", "/tmp/x", "--init-from", "/tmp/w.safetensors", "--no-progress"]) == 0
    cfg = seen["cfg"]
    assert (cfg.max_minutes, cfg.data_workers, cfg.steps, cfg.out) == (1.5, 3, 7, "/tmp/x")
    assert cfg.init_from == "/tmp/w.safetensors"
    with pytest.raises(ValueError, match="data_workers"):
        cli_train.main(["--config", str(cfg_file), "--data-workers", "-1"])
