"""Training: the loop (:mod:`.trainer`), checkpoint state (:mod:`.state`), optimiser and schedule
(:mod:`.optim`), the checked start (:mod:`.start_check`) and the run's outputs (:mod:`.outputs`)."""

from .trainer import Distiller

__all__ = ["Distiller"]
