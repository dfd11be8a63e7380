"""Run sdi-guidance inside real threestudio + threestudio-3dgs on the CPU; write a JSON report (test harness).

    python tests/threestudio_3dgs_cpu/run_3dgs.py --threestudio-root /path/to/threestudio \
        --threestudio-3dgs-root /path/to/threestudio-3dgs --workdir /tmp/x [--report r.json] [--only a,b]

:mod:`harness3dgs` sets up the working directory (threestudio and threestudio-3dgs are never written
to), then each scenario of :mod:`scenarios3dgs` runs through launch.py's ``main()``. A scenario that
raises is reported as ``{"error": <traceback>}``; the others still run. The report is rewritten after
every scenario, so a killed run keeps what finished.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
import traceback
import warnings

sys.dont_write_bytecode = True  # never write __pycache__ into the checkouts
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threestudio-root", required=True, type=pathlib.Path)
    parser.add_argument("--threestudio-3dgs-root", required=True, type=pathlib.Path)
    parser.add_argument("--workdir", required=True, type=pathlib.Path)
    parser.add_argument("--report", type=pathlib.Path, default=None)
    parser.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    args = parser.parse_args()
    report_path = args.report.resolve() if args.report else None
    warnings.filterwarnings("ignore")

    import harness3dgs
    import scenarios3dgs

    only = [name for name in args.only.split(",") if name]
    unknown = sorted(set(only) - set(scenarios3dgs.SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(scenarios3dgs.SCENARIOS)}")
    g = harness3dgs.start(args.threestudio_root, args.threestudio_3dgs_root, args.workdir)
    report: dict = {"shimmed": g.shimmed, "seconds": {}}
    for name, run in scenarios3dgs.SCENARIOS.items():
        if only and name not in only:
            continue
        started = time.perf_counter()
        try:
            report[name] = run(g)
        except Exception:
            report[name] = {"error": traceback.format_exc()}
        report["seconds"][name] = round(time.perf_counter() - started, 1)
        report["cuda_rewrites"] = dict(g.shim.torch_proxy.rewrites)
        if report_path is not None:
            report_path.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
