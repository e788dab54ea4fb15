"""evsim: event-driven spiking neural network simulation and training on CPU."""
from evsim.energy import EnergyModel, EnergyReport, profile
from evsim.inspect import Recording, record

__all__ = ["EnergyModel", "EnergyReport", "profile", "Recording", "record"]
