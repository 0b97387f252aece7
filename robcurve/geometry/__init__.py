"""Geometry of representation trajectories (METHOD.md §1–§4).

* :mod:`.directions`: directions of travel d (:data:`directions`, :func:`get_direction`).
* :mod:`.trajectory`: :func:`trajectory` (batched forwards along x + ε d) and
  :func:`curvature` (turning angles with their ladder, total turning, straightness, R²,
  local turning angle, in-class region); :func:`local_turning_angle`.
* :mod:`.boundary`: :func:`travel_distance` to the decision boundary along d.
* :mod:`.jumpout`: :func:`jump_out`.
* :mod:`.layers`: :func:`layer_profile` at every block output.
"""

from robcurve.geometry import trajectory as _trajectory_module
from robcurve.geometry.boundary import TravelDistance, travel_distance
from robcurve.geometry.directions import directions, get_direction
from robcurve.geometry.jumpout import JumpOut, jump_out
from robcurve.geometry.layers import LayerProfile, LayerSpec, default_layers, layer_profile
from robcurve.geometry.trajectory import (
    Curvature,
    SpaceCurvature,
    Trajectory,
    curvature,
    eps_grid,
    local_turning_angle,
)


class _CallableModule(type(_trajectory_module)):
    """``robcurve.geometry.trajectory`` is the module (``import robcurve.geometry.trajectory``
    gives the module, not a function) and, called, the function :func:`trajectory`."""

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003
        return self.trajectory(*args, **kwargs)


_trajectory_module.__class__ = _CallableModule
trajectory = _trajectory_module

__all__ = [
    "Curvature", "JumpOut", "LayerProfile", "LayerSpec", "SpaceCurvature", "Trajectory", "TravelDistance",
    "curvature", "default_layers", "directions", "eps_grid", "get_direction", "jump_out", "layer_profile",
    "local_turning_angle", "trajectory", "travel_distance",
]
