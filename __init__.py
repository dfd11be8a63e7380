"""threestudio-sdi as a threestudio extension: ``cd custom && git clone <repo> threestudio-sdi``.

threestudio's ``launch.py`` imports threestudio, then this file (under the module name of its folder)
before it parses the config. The package ``threestudio_sdi`` beside this file is put first on
``sys.path`` (so the code and the configs in ``configs/`` are the same checkout's), and importing its
plugin checks threestudio's version and registers ``sdi-guidance`` and ``sdi-ext-system``.

Install its requirements with ``pip install -r custom/threestudio-sdi/requirements.txt``; run with
``python launch.py --config custom/threestudio-sdi/configs/sdi.yaml --train --gpu 0
system.prompt_processor.prompt="..."``; ``sdi-doctor --threestudio .`` checks the setup.

Imported where threestudio has not been imported (pytest collecting this repository, whose root is a
package), it registers nothing.
"""

import os
import sys

if "threestudio" in sys.modules:
    _ROOT = os.path.dirname(os.path.abspath(__file__))
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)
    from threestudio_sdi.threestudio import REGISTERED_NAMES, SDIExtSystem, SDIGuidance  # noqa: F401
