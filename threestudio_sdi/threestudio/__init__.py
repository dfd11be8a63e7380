"""threestudio plugin of threestudio-sdi: registers ``sdi-guidance`` and ``sdi-ext-system``.

Importing this package needs threestudio importable (``import threestudio``); threestudio's
``launch.py`` does it through ``custom/threestudio-sdi/__init__.py``. The names are chosen so that
they never collide with threestudio's built-in SDI (``stable-diffusion-sdi-guidance``,
``sdi-system``); importing twice in one process is harmless (:mod:`.registry`).
"""

from __future__ import annotations

from .guidance import GUIDANCE_NAME, SDIGuidance, conditioning_from_prompt_utils, resolve_noise
from .system import SYSTEM_NAME, SDIExtSystem

REGISTERED_NAMES = (GUIDANCE_NAME, SYSTEM_NAME)

__all__ = [
    "GUIDANCE_NAME",
    "REGISTERED_NAMES",
    "SYSTEM_NAME",
    "SDIExtSystem",
    "SDIGuidance",
    "conditioning_from_prompt_utils",
    "resolve_noise",
]
