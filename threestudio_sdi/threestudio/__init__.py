"""threestudio plugin of threestudio-sdi: registers ``sdi-guidance``, ``sdi-ext-system`` and the mixin
``sdi-guidance-state`` (the guidance's state in another system's checkpoints: ``"<system>:sdi-guidance-state"``).

Importing this package needs threestudio importable (``import threestudio``) at version
:data:`MIN_THREESTUDIO_VERSION` or newer; threestudio's ``launch.py`` imports it through the
extension's ``__init__.py`` (this repository's root, or a drop-in). The names never collide with
threestudio's built-in SDI (``stable-diffusion-sdi-guidance``, ``sdi-system``); importing twice in one
process is harmless (:mod:`.registry`).
"""

from __future__ import annotations

from .version_guard import MIN_THREESTUDIO_VERSION, check_threestudio_version

check_threestudio_version()

from .backbone import conditioning_from_prompt_utils  # noqa: E402
from .guidance import GUIDANCE_NAME, SDIGuidance  # noqa: E402
from .guidance_state import STATE_MIXIN_NAME, GuidanceStateMixin  # noqa: E402
from .system import SYSTEM_NAME, SDIExtSystem  # noqa: E402

REGISTERED_NAMES = (GUIDANCE_NAME, SYSTEM_NAME, STATE_MIXIN_NAME)

__all__ = [
    "GUIDANCE_NAME",
    "STATE_MIXIN_NAME",
    "MIN_THREESTUDIO_VERSION",
    "REGISTERED_NAMES",
    "SYSTEM_NAME",
    "GuidanceStateMixin",
    "SDIExtSystem",
    "SDIGuidance",
    "conditioning_from_prompt_utils",
]
