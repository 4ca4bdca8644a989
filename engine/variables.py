"""Variable names, units and CMIP/ERA5 aliases shared by every module."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VARIABLES", "VariableInfo", "VARIABLE_INFO", "CMIP_NAMES", "ERA5_NAMES"]

#: Order of the variables in every tensor (channel axis) and file.
VARIABLES: tuple[str, ...] = ("t2m", "msl", "u10", "v10")


@dataclass(frozen=True)
class VariableInfo:
    name: str
    units: str
    long_name: str
    standard_name: str
    cmip: str
    cmap: str


VARIABLE_INFO: dict[str, VariableInfo] = {
    "t2m": VariableInfo("t2m", "K", "2 metre temperature", "air_temperature", "tas", "RdYlBu_r"),
    "msl": VariableInfo("msl", "Pa", "mean sea level pressure", "air_pressure_at_mean_sea_level", "psl", "viridis"),
    "u10": VariableInfo("u10", "m s-1", "10 metre U wind component", "eastward_wind", "uas", "RdBu_r"),
    "v10": VariableInfo("v10", "m s-1", "10 metre V wind component", "northward_wind", "vas", "RdBu_r"),
}

#: CMIP (CMOR) variable name -> ours.
CMIP_NAMES: dict[str, str] = {v.cmip: k for k, v in VARIABLE_INFO.items()}

#: ERA5 names as found in CDS NetCDF and ARCO/WeatherBench2 zarr -> ours.
ERA5_NAMES: dict[str, str] = {
    "t2m": "t2m", "2t": "t2m", "2m_temperature": "t2m",
    "msl": "msl", "mean_sea_level_pressure": "msl",
    "u10": "u10", "10u": "u10", "10m_u_component_of_wind": "u10",
    "v10": "v10", "10v": "v10", "10m_v_component_of_wind": "v10",
}
