"""threestudio-sdi: Score Distillation via Reparametrized DDIM (SDI, NeurIPS 2024).

The core (schedules, DDIM, inversion, guidance math) is pure torch; diffusers and threestudio are
imported only by the modules that need them.
"""

__version__ = "0.1.0"
