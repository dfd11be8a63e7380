"""2D distillation lab: score distillation with the image as the parameter, on any denoiser."""

from .distill import METHODS, UPDATES, LabRun, distill_2d, lab_timesteps, sample_reference_2d

__all__ = ["METHODS", "UPDATES", "LabRun", "distill_2d", "lab_timesteps", "sample_reference_2d"]
