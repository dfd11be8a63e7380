"""``sdi-bench``: the SDI paper's Table 1 for any threestudio configs (plan, run, score, report).

Layers: :mod:`.suites`, :mod:`.methods` and :mod:`.plan` say what to run; :mod:`.store` (SQLite) keeps
every run's claim, outcome and metrics; :mod:`.execution` runs one attempt through
:mod:`.launcher` (threestudio's own ``launch.py``, measured by :mod:`.probe`); :mod:`.local_executor`
and :mod:`.slurm_executor` (submitit) drive the attempts; :mod:`.scoring` computes metrics behind one
interface; :mod:`.report` writes the table and figures. Nothing here modifies threestudio.
"""
