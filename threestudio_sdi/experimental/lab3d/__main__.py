"""``python -m threestudio_sdi.experimental.lab3d``: the ``sdi-lab3d`` command."""

from .cli import main

raise SystemExit(main())
