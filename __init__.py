"""threestudio-sdi as a threestudio extension: ``cd custom && git clone <repo> threestudio-sdi``, then
``pip install -r custom/threestudio-sdi/requirements.txt``; ``sdi-doctor --threestudio .`` checks it.

launch.py imports this file after threestudio: the package beside it goes first on ``sys.path`` (the
same checkout's code and configs) and its plugin checks threestudio's version and registers our names.
Imported without threestudio (pytest collecting this repository's root package), it registers nothing.
"""

import os
import sys

if "threestudio" in sys.modules:
    _ROOT = os.path.dirname(os.path.abspath(__file__))
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)
    from threestudio_sdi.threestudio import REGISTERED_NAMES, SDIExtSystem, SDIGuidance  # noqa: F401
