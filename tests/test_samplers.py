"""Posterior samplers: the StepState contract, cancellation, determinism, guidance, DDRM exactness, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zssd_engine.conditioning import static_channels, time_features
from zssd_engine.gcm import gcm_field
from zssd_engine.grids import GridError, Region, era5_grid
from zssd_engine.operators import conservative
from zssd_engine.prior.schedule import DiffusionSchedule, linear_betas
from zssd_engine.samplers import (
    MIN_ALPHA_BAR, KroneckerSVD, StepState, get_sampler, native_observation, record_trajectory, respaced_timesteps,
    sample_ddrm, sample_dps, sample_unconditional, sample_zssd, start_timestep, ucg_coarse_grid, zssd_observation,
)
from zssd_engine.samplers.guidance import effective_scale
from zssd_engine.samplers.guidance_table import default_guidance_scale
from zssd_engine.statics import load_statics
from zssd_engine.variables import VARIABLES

from conftest import DEMO_REGION, DEMO_TIME

TIME = DEMO_TIME
REGION = Region.parse(DEMO_REGION)  # 16x16 px, crosses 5° boundaries in both directions (2x2 unified cells)


class GaussianPrior:
    """Exact denoiser for x0 ~ N(0, I) in normalised space (x̂0 = √ᾱ x_t) — analytic test double."""

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.variables = VARIABLES
        self.schedule = DiffusionSchedule(linear_betas(1000), "linear")
        self.mean = torch.tensor([288.0, 101300.0, 0.0, 0.0]).view(4, 1, 1)
        self.std = torch.tensor([12.0, 900.0, 5.0, 5.0]).view(4, 1, 1)

    def eps(self, x, t, static, time_feats):
        ab = self.schedule.alphas_cumprod.to(x.dtype)[t].view(-1, 1, 1, 1)
        return torch.sqrt(1 - ab) * x

    def normalize(self, x):
        return (x - self.mean.to(x)) / self.std.to(x)

    def denormalize(self, x):
        return x * self.std.to(x) + self.mean.to(x)

    def check_size(self, h, w):
        if h < 8 or w < 8:
            raise ValueError(f"region of {h}x{w} pixels is smaller than the prior's minimum 8x8")


@pytest.fixture(scope="module")
def fine():
    return era5_grid().select(REGION)[0]


@pytest.fixture(scope="module")
def cond(fine):
    dem, land = load_statics().region(fine)
    return static_channels(fine, dem, land, TIME), time_features([TIME])


@pytest.fixture(scope="module")
def gcm(world):
    return gcm_field("MPI-ESM1-2-LR", TIME, REGION, world)


@pytest.fixture(scope="module")
def gauss():
    return GaussianPrior()


def _run(fn, prior, gcm, fine, cond, **kw):
    return list(fn(prior, gcm, fine, *cond, **kw))


# ------------------------------------------------------------------ contract
@pytest.mark.parametrize("method", ["zssd", "dps", "ddrm", "unconditional"])
def test_stepstate_contract(method, tiny, gcm, fine, cond):
    states = _run(get_sampler(method), tiny, gcm, fine, cond, steps=4, members=2, seed=1)
    assert len(states) == 4
    ts = [s.t for s in states]
    t0 = start_timestep(tiny.schedule.alphas_cumprod)
    assert float(tiny.schedule.alphas_cumprod[t0]) >= MIN_ALPHA_BAR > float(tiny.schedule.alphas_cumprod[t0 + 1])
    assert ts == respaced_timesteps(4, 1000, t0) and ts[0] == t0 and ts[-1] == 0
    for i, s in enumerate(states):
        assert isinstance(s, StepState)
        assert s.step == i and s.n_steps == 4 and s.final == (i == 3)
        assert s.x_t.shape == (2, 4, 16, 16) and s.x0_hat.shape == (2, 4, 16, 16)
        assert not s.x_t.requires_grad and not s.x0_hat.requires_grad
        assert s.sigma > 0 and 0 < s.alpha_bar < 1
        assert s.t_next == (ts[i + 1] if i < 3 else -1)
        assert s.method == method
        if method != "unconditional":
            assert math.isfinite(s.misfit) and len(s.misfit_members) == 2
            assert s.misfit == pytest.approx(np.mean(s.misfit_members))
        with pytest.raises(AttributeError):
            s.step = 5  # frozen
    assert states[-1].sample_phys().shape == (2, 4, 16, 16)
    assert states[0].x0_phys().shape == (2, 4, 16, 16)
    with pytest.raises(ValueError):
        states[0].result()
    assert torch.isfinite(states[-1].result()).all()


def test_generator_close_stops(tiny, gcm, fine, cond):
    gen = sample_zssd(tiny, gcm, fine, *cond, steps=10, guidance_scale=1.0)
    first = next(gen)
    assert first.step == 0
    gen.close()
    with pytest.raises(StopIteration):
        next(gen)


@pytest.mark.parametrize("method", ["zssd", "ddrm"])
def test_determinism(method, tiny, gcm, fine, cond):
    fn = get_sampler(method)
    a = _run(fn, tiny, gcm, fine, cond, steps=3, members=2, seed=7)[-1].x_t
    b = _run(fn, tiny, gcm, fine, cond, steps=3, members=2, seed=7)[-1].x_t
    c = _run(fn, tiny, gcm, fine, cond, steps=3, members=2, seed=8)[-1].x_t
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # members differ


# ------------------------------------------------------------------ guidance
@pytest.mark.parametrize("prior_name", ["tiny", "gauss"])
def test_zssd_guidance_reduces_misfit(prior_name, request, gcm, fine, cond):
    prior = request.getfixturevalue(prior_name)
    obs = zssd_observation(prior, gcm, fine)
    unguided = _run(sample_zssd, prior, gcm, fine, cond, steps=20, members=2, seed=3, guidance_scale=0.0)[-1]
    guided = _run(sample_zssd, prior, gcm, fine, cond, steps=20, members=2, seed=3, guidance_scale=30.0)[-1]
    m0 = obs.misfit(unguided.x_t).mean()
    m1 = obs.misfit(guided.x_t).mean()
    assert guided.guidance_norm > 0 and unguided.guidance_norm == 0
    assert m1 < 0.5 * m0


def test_dps_guidance_reduces_misfit(gauss, gcm, fine, cond):
    obs = native_observation(gauss, gcm, fine)
    m0 = obs.misfit(_run(sample_dps, gauss, gcm, fine, cond, steps=20, seed=3, guidance_scale=0.0)[-1].x_t)
    m1 = obs.misfit(_run(sample_dps, gauss, gcm, fine, cond, steps=20, seed=3, guidance_scale=100.0)[-1].x_t)
    assert float(m1) < 0.5 * float(m0)


def test_guiding_the_ensemble_mean(gauss, tiny, gcm, fine, cond):
    """``guide_mean``: one misfit on the members' mean (a monthly-mean input).  The mean matches the data while
    the members stay apart; with one member it is plain guidance; per-member conditioning reaches the network."""
    obs = zssd_observation(gauss, gcm, fine)
    kw = dict(steps=20, members=4, seed=3, guidance_scale=30.0)
    per = _run(sample_zssd, gauss, gcm, fine, cond, **kw)[-1]
    mean = _run(sample_zssd, gauss, gcm, fine, cond, guide_mean=True, **kw)[-1]
    unguided = _run(sample_zssd, gauss, gcm, fine, cond, **{**kw, "guidance_scale": 0.0})[-1]
    mis_mean = lambda st: float(obs.misfit(st.x_t.mean(0, keepdim=True))[0])  # noqa: E731
    assert mis_mean(mean) < 0.5 * mis_mean(unguided)
    assert mean.misfit_members and len(mean.misfit_members) == 4
    # each member's own 5° means are not pinned, only their mean: members sit farther from y than when each is guided
    own = lambda st: float(obs.misfit(st.x_t).mean())  # noqa: E731
    assert own(mean) > 2 * own(per) and own(mean) > 2 * mis_mean(mean)
    one = dict(kw, members=1)
    a = _run(sample_zssd, gauss, gcm, fine, cond, guide_mean=True, **one)[-1]
    b = _run(sample_zssd, gauss, gcm, fine, cond, **one)[-1]
    assert torch.equal(a.x_t, b.x_t)
    # one conditioning row per member: a member's sample depends on its own row only
    static, tf = cond
    rows_s = np.stack([static, static_channels(fine, *load_statics().region(fine), "2021-08-20T18:00")])
    rows_t = np.concatenate([tf, time_features(["2021-08-20T18:00"])])
    two = _run(sample_zssd, tiny, gcm, fine, (rows_s, rows_t), steps=2, members=2, seed=1)[-1]
    same = _run(sample_zssd, tiny, gcm, fine, (np.stack([static, static]), np.concatenate([tf, tf])), steps=2,
                members=2, seed=1)[-1]
    assert torch.equal(two.x_t[0], same.x_t[0]) and not torch.equal(two.x_t[1], same.x_t[1])
    with pytest.raises(ValueError, match=r"time features must be .*\(2, F\)"):
        list(sample_zssd(tiny, gcm, fine, static, np.concatenate([tf, tf, tf]), steps=2, members=2))


def test_ddrm_noiseless_reproduces_block_means(tiny, gauss, gcm, fine, cond):
    obs = native_observation(gauss, gcm, fine)
    A = conservative(fine, obs.coarse_grid, dtype=torch.float64)
    y = obs.extra["y_phys"]
    tol = torch.tensor([1e-3, 0.05, 1e-4, 1e-4], dtype=torch.float64).view(4, 1, 1)
    for prior in (gauss, tiny):
        final = _run(sample_ddrm, prior, gcm, fine, cond, steps=5, members=2, seed=0, sigma_y=0.0)[-1]
        got = A(final.sample_phys().double())
        assert torch.all((got - y).abs() <= tol), (got - y).abs().amax(dim=(0, 2, 3))
    # with observation noise the means are no longer forced
    final = _run(sample_ddrm, gauss, gcm, fine, cond, steps=5, seed=0, sigma_y=0.5)[-1]
    assert (A(final.sample_phys().double()) - y).abs().amax() > 1e-2


def test_kronecker_svd_is_exact(gauss, gcm, fine):
    obs = native_observation(gauss, gcm, fine)
    op = conservative(fine, obs.coarse_grid, dtype=torch.float64)
    svd = KroneckerSVD(op)
    x = torch.randn(3, 4, *fine.shape, dtype=torch.float64)
    assert torch.allclose(svd.apply(x), op(x), atol=1e-12)
    assert torch.allclose(svd.v(svd.vt(x)), x, atol=1e-12)  # V orthogonal
    assert int(svd.pos.sum()) == obs.coarse_grid.shape[0] * obs.coarse_grid.shape[1]


# ------------------------------------------------------------------ masking
def test_nan_cells_and_missing_variables_excluded(gauss, gcm, fine):
    g = gcm.copy(deep=True)
    g["t2m"][g.sizes["lat"] // 2, g.sizes["lon"] // 2] = np.nan  # a cell inside the region
    g = g.drop_vars("msl")
    obs = native_observation(gauss, g, fine)
    assert obs.unguided == ("msl",)
    assert not bool(obs.mask[1].any()) and int((~obs.mask[0]).sum()) == 1
    x0 = torch.randn(1, 4, *fine.shape)
    base = obs.misfit(x0)
    x1 = x0.clone()
    x1[:, 1] += 100.0  # msl is unobserved → no effect
    assert torch.allclose(obs.misfit(x1), base)
    # manual: weighted squared residual over finite cells only
    r = (obs.op(x0) - obs.y) ** 2 * obs.weights
    manual = torch.sqrt(torch.nansum(r))
    assert float(base[0]) == pytest.approx(float(manual), rel=1e-5)
    zo = zssd_observation(gauss, g, fine)
    assert zo.unguided == ("msl",) and bool(torch.isfinite(zo.y[0]).all())
    # sampling still runs with the NaN cell and the missing variable
    final = list(sample_ddrm(gauss, g, fine, np.zeros((8, 16, 16), np.float32), np.zeros(6, np.float32),
                             steps=3))[-1]
    assert torch.isfinite(final.x_t).all()


def test_ucg_coarse_grid_is_clipped(fine):
    coarse = ucg_coarse_grid(fine)
    assert coarse.shape == (2, 2)
    flb = fine.lat_bounds
    assert coarse.lat_bounds.max() == pytest.approx(flb.max()) and coarse.lat_bounds.min() == pytest.approx(flb.min())
    assert coarse.lon_bounds[0] == pytest.approx(fine.lon_bounds[0])
    assert coarse.lon_bounds[-1] == pytest.approx(fine.lon_bounds[-1])
    assert coarse.cell_area().sum() == pytest.approx(fine.cell_area().sum(), rel=1e-9)


# ------------------------------------------------------------------ errors
def test_bad_input_errors(tiny, gcm, fine, cond, world):
    with pytest.raises(ValueError, match="at least 1"):
        sample_zssd(tiny, gcm, fine, *cond, steps=0)
    with pytest.raises(ValueError, match="at most 1000"):
        sample_dps(tiny, gcm, fine, *cond, steps=1001)
    with pytest.raises(ValueError, match="unknown sampling method"):
        get_sampler("magic")
    with pytest.raises(ValueError, match="members"):
        sample_ddrm(tiny, gcm, fine, *cond, steps=2, members=0)
    with pytest.raises(ValueError, match="guidance schedule"):
        sample_zssd(tiny, gcm, fine, *cond, steps=2, guidance_schedule="wild")
    # a region inside a single 5° unified cell
    r1 = Region(11, 15, 121, 125)
    f1 = era5_grid().select(r1)[0]
    g1 = gcm_field("MPI-ESM1-2-LR", TIME, r1, world)
    with pytest.raises(GridError, match="2x2"):
        sample_zssd(tiny, g1, f1, np.zeros((8, 16, 16), np.float32), cond[1], steps=2)
    # a region smaller than the prior accepts
    r2 = Region(12, 12.25, 122, 122.25)
    f2 = era5_grid().select(r2)[0]
    g2 = gcm_field("MPI-ESM1-2-LR", TIME, r2, world)
    with pytest.raises(ValueError, match="smaller than the prior"):
        sample_ddrm(tiny, g2, f2, np.zeros((8, 1, 1), np.float32), cond[1], steps=2)
    # an all-NaN GCM field
    gnan = gcm.copy(deep=True)
    for v in gnan.data_vars:
        gnan[v][:] = np.nan
    for fn in (sample_zssd, sample_dps, sample_ddrm):
        with pytest.raises(ValueError, match="NaN"):
            fn(tiny, gnan, fine, *cond, steps=2)
    # a GCM field that does not cover the region
    far = gcm_field("MPI-ESM1-2-LR", TIME, Region(40, 44, 10, 14), world)
    with pytest.raises(GridError, match="does not cover"):
        sample_zssd(tiny, far, fine, *cond, steps=2)
    # static channels of the wrong size
    with pytest.raises(ValueError, match="static"):
        sample_zssd(tiny, gcm, fine, np.zeros((8, 8, 8), np.float32), cond[1], steps=2)


# ------------------------------------------------------------------ helpers
def test_record_trajectory_thins(gauss, gcm, fine, cond):
    seen = []
    tr = record_trajectory(sample_zssd(gauss, gcm, fine, *cond, steps=40, guidance_scale=1.0), every=1,
                           max_frames=8, callback=seen.append)
    assert len(seen) == 40 and tr.steps_seen == 40 and len(tr.misfit) == 40
    assert 2 <= len(tr.frames) <= 9
    assert tr.frames[-1].step == 39 and tr.final is not None and tr.final.final
    assert tr.frames[0].x0_hat.device.type == "cpu"
    assert tr.result().shape == (1, 4, 16, 16)
    # stopping via the callback closes the run early
    tr2 = record_trajectory(sample_zssd(gauss, gcm, fine, *cond, steps=40), callback=lambda s: s.step < 4)
    assert tr2.steps_seen == 5 and tr2.final is None


def test_schedule_helpers():
    ts = respaced_timesteps(50, 1000)
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0 and all(a > b for a, b in zip(ts, ts[1:]))
    assert respaced_timesteps(1, 1000) == [999]
    assert respaced_timesteps(3, 1000, 900) == [900, 450, 0]
    assert respaced_timesteps(1000, 1000, 900) == respaced_timesteps(1000, 1000)  # more steps than t_start
    assert default_guidance_scale("zssd", 100) > 0
    z20, z50 = default_guidance_scale("zssd", 20), default_guidance_scale("zssd", 50)
    assert min(z20, z50) <= default_guidance_scale("zssd", 30) <= max(z20, z50)
    assert effective_scale(2.0, (128, 128)) == pytest.approx(2.0)
    assert effective_scale(2.0, (64, 64)) == pytest.approx(1.0)


def test_unconditional_ignores_gcm(gauss, fine, cond):
    s = list(sample_unconditional(gauss, None, fine, *cond, steps=3, seed=0))[-1]
    assert math.isnan(s.misfit) and s.guidance_norm == 0.0


def test_ddim_eta1_is_the_ddpm_posterior():
    from zssd_engine.prior.schedule import cosine_betas, eps_from_x0
    from zssd_engine.samplers.respacing import ddim_step

    s = DiffusionSchedule(cosine_betas(1000), "cosine")
    ab = s.alphas_cumprod
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    x0 = torch.randn_like(x)
    for t in (999, 500, 1):
        a_t, a_p = float(ab[t]), float(ab[t - 1])
        eps = eps_from_x0(x, x0, a_t)
        mean = ddim_step(x, x0, eps, a_t, a_p, 1.0, None)
        assert torch.allclose(mean, s.posterior_mean(x0, x, torch.tensor([t])), atol=1e-10)
        noise = torch.ones_like(x)
        var = float((ddim_step(x, x0, eps, a_t, a_p, 1.0, noise) - mean).mean() ** 2)
        assert var == pytest.approx(float(s.posterior_variance[t]), rel=1e-9)


def test_tuned_guidance_table_is_read(tmp_path, monkeypatch):
    import json

    import zssd_engine.samplers.guidance_table as C

    f = tmp_path / "guidance_defaults.json"
    f.write_text(json.dumps({"scales": {"zssd": {"20": 2.0, "80": 8.0}}, "date": "d", "checkpoint_sha256": "abc"}))
    monkeypatch.setattr(C, "TUNED_GUIDANCE_FILE", f)
    z, src = C.default_guidance_scale("zssd", 40, with_source=True)
    assert z == pytest.approx(4.0) and src.startswith("tuned")  # log-log interpolation between 20 and 80
    assert C.default_guidance_scale("zssd", 10) == 2.0 and C.default_guidance_scale("zssd", 500) == 8.0
    assert C.default_guidance_scale("dps", 50) == pytest.approx(C.DEFAULT_GUIDANCE["dps"][50])  # fallback
    f.write_text("not json")
    assert C.default_guidance_scale("zssd", 20, with_source=True)[1].startswith("built-in")


def test_guidance_tables_are_chosen_by_prior_and_domain(tmp_path, monkeypatch):
    import json

    import zssd_engine.samplers.guidance_table as C

    f = tmp_path / "guidance_defaults.json"
    monkeypatch.setattr(C, "TUNED_GUIDANCE_FILE", f)
    C.install_tuned_table({"checkpoint_sha256": "shipped", "domain": "demo", "date": "d1",
                           "scales": {"zssd": {"50": 3.0}, "dps": {"50": 40.0}}}, default=True)
    C.install_tuned_table({"checkpoint_sha256": "v4", "domain": "demo", "scales": {"zssd": {"50": 2.0}}})
    C.install_tuned_table({"checkpoint_sha256": "v4", "domain": "real", "scales": {"zssd": {"50": 6.0}}})
    z = lambda **kw: C.default_guidance_scale("zssd", 50, with_source=True, **kw)  # noqa: E731
    assert z()[0] == 3.0 and z(domain="real")[0] == 3.0  # the shipped prior has no real table: its demo one
    assert "no table tuned on real cases" in z(domain="real")[1]
    assert z(prior_sha256="v4")[0] == 2.0 and z(prior_sha256="v4", domain="real")[0] == 6.0
    assert "not tuned for this prior" not in z(prior_sha256="v4")[1]
    other = z(prior_sha256="someone-elses")
    assert other[0] == 3.0 and "not tuned for this prior" in other[1]  # falls back to the shipped prior's
    assert C.default_guidance_scale("dps", 50, prior_sha256="v4") == 40.0  # v4 has no dps table
    # re-installing replaces that (checkpoint, domain) only, and keeps the shipped prior the default
    C.install_tuned_table({"checkpoint_sha256": "v4", "domain": "real", "scales": {"zssd": {"50": 5.0}}})
    d = json.loads(f.read_text())
    assert d["default_checkpoint_sha256"] == "shipped" and len(d["tables"]) == 3
    assert z(prior_sha256="v4", domain="real")[0] == 5.0
    # a run tuning another method adds it to the table and keeps the first run's method and provenance
    C.install_tuned_table({"checkpoint_sha256": "v4", "domain": "demo", "date": "d2", "scales": {"dps": {"50": 30.0}}})
    v4 = [t for t in json.loads(f.read_text())["tables"] if t["checkpoint_sha256"] == "v4" and t["domain"] == "demo"]
    assert v4[0]["scales"] == {"zssd": {"50": 2.0}, "dps": {"50": 30.0}}
    assert [r["methods"] for r in v4[0]["runs"]] == [["zssd"], ["dps"]]
    assert C.default_guidance_scale("dps", 50, prior_sha256="v4") == 30.0 and z(prior_sha256="v4")[0] == 2.0
    assert "d2" in C.default_guidance_scale("dps", 50, True, prior_sha256="v4")[1]
    with pytest.raises(ValueError, match="domain"):
        C.default_guidance_scale("zssd", 50, domain="mars")
    with pytest.raises(ValueError, match="domain"):
        C.install_tuned_table({"checkpoint_sha256": "v4", "domain": "mars", "scales": {"zssd": {"50": 1.0}}})
    f.write_text("not json")
    with pytest.raises(ValueError):  # an unreadable table file is not overwritten
        C.install_tuned_table({"checkpoint_sha256": "v4", "domain": "demo", "scales": {"zssd": {"50": 1.0}}})
    assert f.read_text() == "not json"
    # a shipped prior whose table lacks a method borrows another prior's, and says so
    g = tmp_path / "second.json"
    C.install_tuned_table({"checkpoint_sha256": "v1", "domain": "demo", "scales": {"dps": {"50": 40.0}}}, g)
    C.install_tuned_table({"checkpoint_sha256": "v4", "domain": "demo", "scales": {"zssd": {"50": 2.0}}}, g,
                          default=True)
    monkeypatch.setattr(C, "TUNED_GUIDANCE_FILE", g)
    z_dps, src = C.default_guidance_scale("dps", 50, True)
    assert z_dps == 40.0 and "checkpoint v1" in src and "not tuned for this prior v4" in src
    assert C.default_guidance_scale("ddrm-like", 50, True) == (0.0, "n/a")


def test_dps_correction_is_a_gradient_step_on_the_unsquared_misfit():
    """x_{t'} = x'_{t'} − ζ_t ∇_{x_t} ‖r‖ per member: each member moves by ζ_t along its own unit residual."""
    from zssd_engine.samplers.guidance import dps_correction, guidance_factor

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    y = torch.randn(1, 4, 4, generator=g, dtype=torch.float64)
    misfit = torch.sqrt(((x - y) ** 2).flatten(1).sum(1))
    x_prime = torch.ones(2, 1, 4, 4, dtype=torch.float64)
    out, gnorm = dps_correction(x_prime, x, misfit, 0.5)
    unit = ((x - y) / misfit[:, None, None, None]).detach()
    torch.testing.assert_close(out, x_prime - 0.5 * unit)
    assert gnorm == pytest.approx(0.5) and not out.requires_grad
    assert guidance_factor("constant", 0.1) == 1.0 and guidance_factor("noise", 0.75) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown guidance schedule"):
        guidance_factor("cosine", 0.5)


def test_method_registry_matches_the_samplers_and_the_pipeline(tiny):
    """Every registered method is taken where its kind says: the pipeline's sampler runs the diffusion
    methods (the guided ones with a ζ, ddrm refusing one) and sends the classical ones to baseline()."""
    from zssd_engine import pipeline as P
    from zssd_engine.batch import spec as batch
    from zssd_engine.bias_correction import BC_METHODS
    from zssd_engine.methods import METHODS, get_method, is_guided, method_names, sampler_name
    from zssd_engine.samplers import DEFAULT_GUIDANCE, SAMPLERS

    assert tuple(METHODS) == ("bilinear", "lapse", "bcsd", "zssd", "zssd-bc", "dps", "ddrm")
    assert method_names(paired_training=True) == ("bcsd", "zssd-bc") and BC_METHODS == {"zssd-bc": "zssd"}
    assert set(batch.METHODS) == set(METHODS) and set(batch.GUIDED_METHODS) == set(method_names(guided=True))
    case = P.prepare_case("x6", DEMO_TIME, DEMO_REGION)
    for m in METHODS.values():
        assert P.check_method(m.name) == m.name
        if m.classical:
            assert m.sampler is None
            with pytest.raises(ValueError, match="is a baseline"):
                P.sampler(case, tiny, m.name)
            continue
        assert m.sampler in SAMPLERS
        if m.name in BC_METHODS:  # its bias correction trains first (tests/test_bias_correction.py)
            continue
        if m.guided:
            assert sampler_name(m.name) in DEFAULT_GUIDANCE
            assert next(P.sampler(case, tiny, m.name, steps=1, guidance_scale=1.0)).method == m.sampler
        else:
            with pytest.raises(ValueError, match="takes no guidance scale"):
                P.sampler(case, tiny, m.name, steps=1, guidance_scale=1.0)
    assert sampler_name("zssd-bc") == "zssd" and sampler_name("bilinear") == "bilinear"
    assert is_guided("dps") and not is_guided("ddrm") and not is_guided("unconditional")
    with pytest.raises(ValueError, match="unknown method 'nope'; choose from bilinear, lapse"):
        get_method("nope")


def test_coarse_means_regrid_anomalies_exactly_where_the_gcm_is_its_climatology():
    """A GCM that equals the climatology's native-cell means reaches the unified cells as the climatology's own
    unified means when regridded as an anomaly; the plain overlap regrid smears a steep gradient across cell
    edges.  Variables without a climatology pass as before."""
    from zssd_engine.grids import regular_grid
    from zssd_engine.samplers.observation import coarse_means, native_clipped_grid

    region = Region.parse("-22,10,-94,-62")  # Andes: lowland, slope and plateau inside each native cell
    fine = era5_grid().select(region)[0]
    native = regular_grid(1.875, "gcm").covering(region, margin_cells=1)[0]
    coarse = ucg_coarse_grid(fine, 2.5)
    dem, _ = load_statics().region(fine)
    clim = torch.as_tensor(300.0 - 6.5e-3 * np.asarray(dem, np.float64))[None]  # K, a lapse-rate climatology
    sub, li, lo = native_clipped_grid(native, fine)
    Y = torch.full((2, *native.shape), float("nan"), dtype=torch.float64)
    Y[0][np.asarray(li)[:, None], np.asarray(lo)[None, :]] = conservative(fine, sub, dtype=torch.float64)(clim)[0]
    Y[1] = 1000.0
    truth = conservative(fine, coarse, dtype=torch.float64)(clim)[0]
    plain = coarse_means(Y, native, coarse, fine, ("t2m", "msl"))
    anom = coarse_means(Y, native, coarse, fine, ("t2m", "msl"), {"t2m": clim[0].numpy()})
    torch.testing.assert_close(anom[0], truth, rtol=0, atol=1e-9)
    assert float((plain[0] - truth).abs().max()) > 1.0  # K: the smear the anomaly regrid removes
    torch.testing.assert_close(anom[1], plain[1])
    torch.testing.assert_close(plain, conservative(native, coarse, dtype=torch.float64).masked(Y))
