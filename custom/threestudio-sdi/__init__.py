"""threestudio-sdi drop-in for threestudio's ``custom/`` folder.

threestudio's ``launch.py`` executes this file (under the module name ``threestudio-sdi``) before it
parses the config. It registers ``sdi-guidance`` and ``sdi-ext-system`` from the installed
``threestudio_sdi`` package (``pip install -e /path/to/threestudio-sdi``); the configs are in
``configs/`` beside this file: ``--config custom/threestudio-sdi/configs/sdi.yaml``.
"""

try:
    import threestudio_sdi  # noqa: F401
except ImportError as error:  # launch.py prints this and goes on; make the reason unmistakable
    raise ImportError(
        "custom/threestudio-sdi needs the threestudio-sdi package in this Python environment: "
        "run `pip install -e /path/to/threestudio-sdi` (the repository this folder comes from)"
    ) from error

from threestudio_sdi.threestudio import REGISTERED_NAMES, SDIExtSystem, SDIGuidance  # noqa: E402,F401
