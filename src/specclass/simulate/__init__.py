"""SDSS-like spectrum simulator built on the SDSS pipeline's eigenspectra.

Public entry points: :func:`simulate`, :class:`Simulator`, :class:`SimulationConfig`
(:mod:`specclass.simulate.simulator`); line physics in :mod:`~specclass.simulate.lines`,
the noise model in :mod:`~specclass.simulate.noise`, templates/priors/ivar bank in
:mod:`~specclass.simulate.templates`.
"""

from specclass.simulate.simulator import SimulationConfig, Simulator, simulate

__all__ = ["SimulationConfig", "Simulator", "simulate"]
