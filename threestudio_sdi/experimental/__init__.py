"""Research beside the product: strategies that are not SDI, and the known-answer labs.

Importing this package registers the research noise strategies (``research-inversion``,
``fixed-point``, ``newton-krylov``, ``safeguarded-anderson``, ``consistent-noise``, ``ode-target``);
:func:`threestudio_sdi.strategies.strategy_class` imports it the first time such a name is asked for, so
``sdi-guidance`` with ``noise: <research name>`` loads it and nothing else does. The 2D lab
(:mod:`.lab`, ``sdi-lab``) and the 3D lab (:mod:`.lab3d`, ``sdi-lab3d``) are here too.
"""

from . import strategies  # noqa: F401  (registers the research strategies)
