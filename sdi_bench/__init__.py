"""``sdi-bench``: the SDI paper's Table 1 for any threestudio configs (plan, run, score, report).

Layers: :mod:`.suites`, :mod:`.methods` and :mod:`.plan` say what to run (a run is its config; prompts
reach threestudio exactly through :mod:`.overrides`); :mod:`.store` (SQLite) keeps every run's claim,
outcome and metrics, and refuses a store that is not right; :mod:`.ownership` proves who holds a run and
whether its training still runs; :mod:`.execution` runs one attempt through :mod:`.launcher`
(threestudio's own ``launch.py``, measured by :mod:`.probe`, dying with its supervisor);
:mod:`.attribution` checks a result against the config that should have made it; :mod:`.local_executor`
and :mod:`.slurm_executor` (submitit) drive the attempts; :mod:`.preflight` checks what a command needs
before it starts; :mod:`.scoring` computes metrics behind one interface; :mod:`.report` writes the table
and figures. Nothing here modifies threestudio.
"""
