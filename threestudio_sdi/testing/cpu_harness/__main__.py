"""``python path/to/cpu_harness COMMAND`` with threestudio's Python (what sdi-doctor runs).

* ``probe DIST...``, in the threestudio folder: prints ``SDI-DOCTOR <json>``: :func:`.probe.environment`
  of the distributions ``DIST``, then threestudio imported with the stand-ins for what is missing and
  :func:`.probe.extension` (or ``threestudio_error`` if threestudio does not import);
* ``train ROOT CONFIG [key=value ...]``, where launch.py is to run (``custom/`` and ``load/`` there):
  the ``launch.py --train`` of the threestudio folder ``ROOT`` on a CPU (:func:`.launcher.launch_on_cpu`).

Run by its path, the harness is loaded under the name ``sdi_cpu_harness``, so nothing named
``threestudio_sdi`` is imported before launch.py loads ``custom/``: an extension installed there by
``git clone`` runs its own code, as it would on a GPU.
"""

import importlib.util
import json
import pathlib
import sys

if __package__:  # python -m threestudio_sdi.testing.cpu_harness
    from . import STUBS, import_threestudio, launcher, load_launch, patches, probe
else:  # python path/to/cpu_harness
    here = pathlib.Path(__file__).resolve().parent
    spec = importlib.util.spec_from_file_location(
        "sdi_cpu_harness", here / "__init__.py", submodule_search_locations=[str(here)]
    )
    assert spec is not None and spec.loader is not None
    harness = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = harness
    spec.loader.exec_module(harness)
    if pathlib.Path(sys.path[0]).resolve() == here:  # its modules are sdi_cpu_harness.*, not top-level
        sys.path.pop(0)
    from sdi_cpu_harness import STUBS, import_threestudio, launcher, load_launch, patches, probe

command, arguments = sys.argv[1], sys.argv[2:]
if command == "probe":
    root = pathlib.Path.cwd()
    report = probe.environment(arguments)
    try:
        threestudio = import_threestudio(root)
        report.update(probe.extension(threestudio, load_launch(root), STUBS))
    except Exception as error:  # threestudio does not import in this Python: that is the finding
        report["threestudio_error"] = probe.error_line(error)
    print("SDI-DOCTOR " + json.dumps(report))
elif command == "train":
    import torch

    torch.set_num_threads(1)  # a tiny model gains nothing from more threads; shared cores lose
    root = pathlib.Path(arguments[0])
    import_threestudio(root)
    patches.apply()
    launcher.launch_on_cpu(load_launch(root), arguments[1], "train", arguments[2:])
else:
    sys.exit(f"unknown command {command!r}: probe DIST... or train ROOT CONFIG [key=value ...]")
