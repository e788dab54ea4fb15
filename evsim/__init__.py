"""evsim: event-driven spiking neural network simulation and training on CPU."""
from evsim.energy import EnergyModel, EnergyReport, profile

__all__ = ["EnergyModel", "EnergyReport", "profile"]
