"""Run the plugin inside a real threestudio checkout, on the CPU, and write a JSON report (test harness).

    python tests/threestudio_cpu/run_smoke.py --threestudio-root /path/to/threestudio --workdir /tmp/x \
        [--report report.json] [--only smoke,resume]

In a fresh working directory (threestudio's tree is never written to):

1. ``custom/threestudio-sdi`` there links to this repository (its root is the extension) and ``load`` to the
   checkout's ``load/`` (the prompt processor reads ``load/prompt_library.json``);
2. imports the real threestudio (the built-in SDI among its modules) with the CPU stand-ins and patches
   of :mod:`threestudio_sdi.testing.cpu_harness`, then calls launch.py's own ``load_custom_modules()``;
3. resolves our names and the built-in SDI's with ``threestudio.find``, and checks the built-in SDS /
   VSD blocks of configs/sds.yaml and configs/vsd.yaml against threestudio's own Config classes;
4. runs each scenario through launch.py's ``main()`` with the tiny offline Stable Diffusion
   (scenarios.py: smoke, resume, longer, bf16, half weights, export, validation; builtin_sdi.py: the
   built-in SDI guidance on the same inputs; mixing.py: sdi-guidance with other systems and components;
   ab_configs.py: configs/sds.yaml and configs/vsd.yaml, threestudio's SDS and VSD, train);
5. checks that threestudio and the 3D lab agree on cameras and images (conventions.py), and distils the
   lab's exact prior with threestudio's own geometry and renderer, scored against the known assets
   (known_answer.py, through ``sdi-guidance``'s ``model_factory``: lab3d's threestudio_prior).

A scenario that raises is reported as ``{"error": <traceback>}``; the others still run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
import traceback

sys.dont_write_bytecode = True  # never write __pycache__ into the threestudio checkout
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from harness import open_harness  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]


def check_builtin_configs(threestudio, load_config) -> dict:
    """configs/sds.yaml and configs/vsd.yaml parse with the real loader; their blocks fit the built-ins."""
    from threestudio.utils.config import parse_structured

    checked = {}
    for name in ("sds.yaml", "vsd.yaml"):
        cfg = load_config(
            str(REPO / "configs" / name), cli_args=["system.prompt_processor.prompt=x"], n_gpus=1
        )
        system_class = threestudio.find(cfg.system_type)
        system_cfg = parse_structured(system_class.Config, cfg.system)
        for kind in ("geometry", "material", "background", "renderer", "guidance", "prompt_processor"):
            component = threestudio.find(system_cfg[f"{kind}_type"])
            parse_structured(component.Config, system_cfg[kind])
        threestudio.find(cfg.data_type)  # the datamodule's keys are checked when it is built
        checked[name] = [cfg.system_type, system_cfg.guidance_type]
    return checked


def registry(threestudio, builtin_count: int, patched: list[str]) -> dict:
    import threestudio_sdi.threestudio as plugin

    assert threestudio.find("sdi-guidance") is plugin.SDIGuidance
    assert threestudio.find("sdi-ext-system") is plugin.SDIExtSystem
    names = ("sdi-guidance", "sdi-ext-system", "stable-diffusion-sdi-guidance", "sdi-system")
    return {
        "threestudio_version": getattr(threestudio, "__version__", "?"),
        "builtin_modules": builtin_count,
        "registered": {
            name: f"{threestudio.find(name).__module__}.{threestudio.find(name).__qualname__}"
            for name in names
        },
        "patched": patched,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threestudio-root", required=True, type=pathlib.Path)
    parser.add_argument("--workdir", required=True, type=pathlib.Path)
    parser.add_argument("--report", type=pathlib.Path, default=None)
    parser.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    args = parser.parse_args()
    opened = open_harness(args.threestudio_root, args.workdir)
    h = opened.harness

    import ab_configs
    import builtin_sdi
    import conventions
    import known_answer
    import mixing
    import scenarios
    from threestudio.utils.config import load_config

    report: dict = registry(h.threestudio, opened.builtin_modules, opened.patched)
    report["builtin_configs"] = check_builtin_configs(h.threestudio, load_config)
    runs = {
        **scenarios.SCENARIOS,
        "builtin_sdi": builtin_sdi.compare,
        "mixing": mixing.matrix,
        "ab_configs": ab_configs.ab_configs,
        "conventions": conventions.conventions,
        "known_answer": known_answer.known_answer,
    }
    only = [name for name in args.only.split(",") if name]
    unknown = sorted(set(only) - set(runs))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(runs)}")
    seconds = {}
    for name, run in runs.items():
        if only and name not in only:
            continue
        started = time.perf_counter()
        try:
            report[name] = run(h)
        except Exception:
            report[name] = {"error": traceback.format_exc()}
        seconds[name] = round(time.perf_counter() - started, 1)
    report["seconds"] = seconds
    text = json.dumps(report, indent=2, default=str)
    if args.report is not None:
        args.report.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
