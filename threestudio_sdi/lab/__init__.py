"""2D distillation lab: score distillation with the image as the parameter, on any denoiser."""

from .distill import METHODS, UPDATES, distill_2d, lab_timesteps

__all__ = ["METHODS", "UPDATES", "distill_2d", "lab_timesteps"]
