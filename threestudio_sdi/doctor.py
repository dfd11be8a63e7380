"""``sdi-doctor --threestudio PATH``: is this threestudio ready for threestudio-sdi? One ✓/✗ line per
check, with the fix after a ✗; exit status 1 when one fails. In order: threestudio's version; a probe in a
fresh interpreter (``--python``) in PATH (``testing/cpu_harness/probe.py``): packages against
threestudio's pins (:data:`WORKS`), CUDA, free GPU memory against each config's ``# GPU memory:`` line,
``load_custom_modules()`` (which folder registered our names, from which files) and every config; the
model source (``check_model_source``, no weights loaded); last, a 3-step smoke run of that folder's
``sdi.yaml`` with a tiny random model, validation and test, through PATH's launch.py (GPU or CPU harness).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from .extension import DROP_IN_INIT, MIN_THREESTUDIO_VERSION, config_dir, parse_version
from .models.model_source import DEFAULT_MODEL_ID, ModelSourceError, check_model_source

HARNESS = pathlib.Path(__file__).resolve().parent / "testing" / "cpu_harness"
INSTALL = "cd custom && git clone <threestudio-sdi repository> threestudio-sdi && pip install -r threestudio-sdi/requirements.txt; or pip install threestudio-sdi && python -m threestudio_sdi.extension ."  # fmt: skip
WORKS = {
    "torch": (">= 2.0", (2, 0), None, "a CUDA build of torch: https://pytorch.org"),
    "diffusers": (">= 0.19.3, < 0.20", (0, 19, 3), (0, 20), 'pip install "diffusers>=0.19.3,<0.20"'),
    "transformers": ("4.28.1", (4, 28, 1), (4, 28, 2), "pip install transformers==4.28.1"),
    "huggingface_hub": ("< 0.26", (), (0, 26), 'pip install "huggingface_hub<0.26"'),
    "omegaconf": ("2.3", (2, 3), (2, 4), "pip install omegaconf==2.3.0"),
    "nerfacc": ("0.5", (0, 5), (0, 6), "pip install git+https://github.com/KAIR-BAIR/nerfacc.git@v0.5.2"),
    "tinycudann": ("any", (), None, "pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch"),
    "nvdiffrast": ("any", (), None, "pip install git+https://github.com/NVlabs/nvdiffrast.git"),
}  # fmt: skip
"""Distribution → (what works, lowest version, first that does not, the fix): threestudio 0.2.3's pins
(its requirements.txt; diffusers 0.19 imports ``cached_download``, gone from huggingface_hub 0.26)."""
EXTRAS = ("diffusers", "transformers", "huggingface_hub", "omegaconf")
"""What the doctor itself imports for the model check and the smoke run."""


@dataclass(frozen=True)
class Check:
    """One line of the report: ✓ or ✗, the name of what was checked, what was found, and the fix."""

    ok: bool
    name: str
    found: str
    fix: str = ""

    def __str__(self) -> str:
        line = f"{'✓' if self.ok else '✗'} {self.name}: {self.found}"
        return line if self.ok or not self.fix else line + "\n    fix: " + self.fix.replace("\n", "\n    ")


def threestudio_check(root: pathlib.Path) -> Check:
    """threestudio in ``root`` (launch.py, threestudio/__init__.py) at the minimum version or newer."""
    init = root / "threestudio" / "__init__.py"
    if not (root / "launch.py").is_file() or not init.is_file():
        fix = "point --threestudio at a clone of https://github.com/threestudio-project/threestudio"
        return Check(False, "threestudio", f"{root} has no launch.py and threestudio/__init__.py", fix)
    match = re.search(r"""__version__\s*=\s*["']([^"']+)""", init.read_text(encoding="utf-8"))
    version = match.group(1) if match else "no __version__"
    ok = match is not None and parse_version(version) >= MIN_THREESTUDIO_VERSION
    fix = f"threestudio-sdi needs >= {'.'.join(map(str, MIN_THREESTUDIO_VERSION))}: git pull in {root}"
    return Check(ok, "threestudio", f"{version} in {root}", fix)


def probe(root: pathlib.Path, python: list[str]) -> dict:
    """What the CPU harness's probe reports of ``python`` in ``root`` (``testing/cpu_harness/probe.py``);
    ``{"probe_error": ...}`` if it crashed."""
    command = [*python, str(HARNESS), "probe", *WORKS]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=900)
    lines = [line for line in result.stdout.splitlines() if line.startswith("SDI-DOCTOR ")]
    if not lines:
        return {"probe_error": (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]}
    return json.loads(lines[-1].split(" ", 1)[1])


def package_checks(info: dict) -> list[Check]:
    """One line per package of :data:`WORKS` (its version, and whether it imports), one for CUDA."""
    checks = []
    for name, (works, lowest, first_bad, fix) in WORKS.items():
        version, error = info["versions"].get(name), info["errors"].get(name)
        ok = version is not None and lowest <= parse_version(version) < (first_bad or (sys.maxsize,))
        found = f"{version} (works: {works})" if version else "not installed"
        found += f", but its import fails: {error}" if version and error else ""
        checks.append(Check(ok and not error, name, found, fix))
    cuda = info["cuda"]
    found = f"{cuda['device']}, CUDA {cuda['version']}" if cuda else "no CUDA device"
    fix = "threestudio trains on CUDA: a CUDA build of torch (https://pytorch.org) on a machine with a GPU"
    return [checks[0], Check(bool(cuda), "CUDA", found, fix), *checks[1:]]


def memory_checks(info: dict, configs: pathlib.Path) -> list[Check]:
    """Free GPU memory against the ``# GPU memory: ~N GB`` (or ``> N GB``) line of each config's header."""
    checks = []
    for path in sorted(configs.glob("*.yaml")) if info["cuda"] else []:
        text = path.read_text(encoding="utf-8")
        stated = re.search(r"^# GPU memory: ([~>]?) ?(\d+(?:\.\d+)?) GB", text, re.M)
        need, free = float(stated.group(2)) if stated else 0.0, info["cuda"]["free_gb"]
        found = f"{'more than' if stated and stated.group(1) == '>' else 'about'} {need:g} GB needed, {free:.1f} GB free"
        fix = "free the GPU (nvidia-smi), or lower data.width / data.height as sdi-24gb.yaml does"
        checks.append(Check(bool(stated) and free >= need, f"GPU memory for {path.name}", found, fix))
    return checks


def registration_checks(info: dict, root: pathlib.Path) -> list[Check]:
    """Our names registered by threestudio's own loader (which install, which files); the configs load."""
    if "threestudio_error" in info:
        fix = "install threestudio's requirements.txt in this Python, with the versions above"
        return [Check(False, "import threestudio", info["threestudio_error"], fix)]
    names, folder = "sdi-guidance, sdi-ext-system", info["extension"]
    stand_ins = f" (stand-ins for {', '.join(info['stand_ins'])})" if info["stand_ins"] else ""
    if folder is None or len(info["registered"]) < 2:
        failed = "; ".join(f"{path}: {error}" for path, error in info["import_failed"])
        found = (
            f"import failed: {failed}"
            if failed
            else f"no folder of custom/ registers them ({info['custom']})"
        )
        return [Check(False, names, found + stand_ins, INSTALL)]
    init = root / "custom" / folder / "__init__.py"
    drop_in = init.read_text(encoding="utf-8") == DROP_IN_INIT
    how = "git clone" if (init.parent / "threestudio_sdi").is_dir() else "drop-in" if drop_in else "custom"
    files = ", ".join(sorted(set(info["registered"].values())))
    bad = "".join(f"; {name}: {error}" for name, error in info["configs"].items() if error)
    loaded = f"{sum(e is None for e in info['configs'].values())} of {len(info['configs'])}"
    other = "".join(  # threestudio-3dgs's configs, say, where it is not in custom/: no failure
        f"; {name} skipped: its {system} comes from another extension, not installed"
        for name, system in info["configs_needing"].items()
    )
    return [
        Check(True, names, f"registered by custom/{folder} ({how}) from {files}{stand_ins}"),
        Check(
            not bad and bool(info["configs"]),
            "configs",
            f"{loaded} in custom/{folder}/configs load{bad}{other}",
        ),
    ]


def model_check(source: str) -> Check:
    """The Stable Diffusion source: a complete folder, in the local cache, or reachable on the hub."""
    setting = "system.guidance.pretrained_model_name_or_path"
    try:
        check_model_source(source, setting, local_files_only=True)
        return Check(True, "model", f"{source}: a complete folder, or in the local Hugging Face cache")
    except ModelSourceError as error:
        problem = error
    if problem.kind == "offline":  # a hub id that is not cached: is the hub reachable?
        try:
            check_model_source(source, setting)
            return Check(True, "model", f"{source}: reachable on the hub (downloaded at the first run)")
        except ModelSourceError as error:
            problem = error
    first, *fix = str(problem).splitlines()
    return Check(False, "model", first, "\n".join(fix))


def smoke_check(root: pathlib.Path, extension: str, python: list[str], cuda: bool) -> Check:
    """3 steps of ``custom/<extension>/configs/sdi.yaml``, validation and test, with a tiny random model,
    through ``root``'s launch.py, run in a temporary folder that links ``root``'s custom/ and load/."""
    from .testing.cpu_harness.configs import CPU, CPU_RESET, sdi_guidance, steps, write_config
    from .testing.tiny_sd import tiny_stable_diffusion

    where = "on the GPU" if cuda else "on the CPU (CPU harness)"
    with tempfile.TemporaryDirectory(prefix="sdi-doctor-") as folder:
        work = pathlib.Path(folder)  # launch.py runs here: its outputs and caches never go into PATH
        for name in ("custom", "load"):  # what launch.py reads from where it runs
            (work / name).symlink_to(root / name, target_is_directory=True)
        tiny = {"system": sdi_guidance(tiny_stable_diffusion(work / "tiny-sd"))}
        own = {"name": "sdi-doctor", "tag": "smoke", "exp_root_dir": str(work / "outputs")}
        base = root / "custom" / extension / "configs" / "sdi.yaml"
        config = str(write_config(work / "smoke.yaml", base, CPU_RESET, CPU, tiny, steps(3), own))
        launch = [str(root / "launch.py"), "--config", config, "--train", "--gpu", "0"]
        started = time.perf_counter()
        command = [*python, *(launch if cuda else [str(HARNESS), "train", str(root), config])]
        run = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=1800)
        seconds = time.perf_counter() - started
        save = work / "outputs" / "sdi-doctor" / "smoke" / "save"
        made = all((save / name).is_file() for name in ("it3-0.png", "it3-test.mp4"))
    if run.returncode == 0 and made:
        found = f"3 steps of sdi.yaml, validation and test through launch.py {where}: {seconds:.0f} s"
        return Check(True, "smoke run", found)
    tail = "\n".join(run.stderr.strip().splitlines()[-8:])
    return Check(False, "smoke run", f"launch.py {where} failed (exit status {run.returncode})", tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sdi-doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--threestudio", type=pathlib.Path, required=True, help="the threestudio folder")
    parser.add_argument("--python", default=sys.executable, help="the Python of threestudio (a command)")
    parser.add_argument("--model", default=DEFAULT_MODEL_ID, help="the Stable Diffusion hub id or folder")
    parser.add_argument("--no-smoke", action="store_true", help="no smoke run (about a minute on a CPU)")
    args = parser.parse_args(argv)
    root, python, checks = args.threestudio.expanduser().resolve(), shlex.split(args.python), []

    def report(*found: Check) -> None:
        for check in found:
            print(check, flush=True)
        checks.extend(found)

    missing = [name for name in EXTRAS if importlib.util.find_spec(name) is None]
    if missing:
        fix = "pip install " + " ".join(WORKS[name][3].split("pip install ")[-1] for name in missing)
        found = f"{', '.join(missing)} missing: no model check, no smoke run"
        report(Check(False, "sdi-doctor's own needs", found, fix))
    report(threestudio_check(root))
    if not (root / "launch.py").is_file():
        return 1
    info = probe(root, python)
    if "probe_error" in info:
        fix = "install threestudio's requirements.txt in it"
        report(Check(False, "python", f"{shlex.join(python)} failed in {root}: {info['probe_error']}", fix))
        return 1
    folder = info.get("extension")
    report(
        *package_checks(info),
        *memory_checks(info, root / "custom" / folder / "configs" if folder else config_dir()),
    )
    report(*registration_checks(info, root), *([] if missing else [model_check(args.model)]))
    if missing or not folder:
        report(*[] if args.no_smoke else [Check(False, "smoke run", "not run: fix the lines above first")])
    elif not args.no_smoke:
        print(f"… smoke run {'on the GPU' if info['cuda'] else 'on the CPU (about a minute)'}", flush=True)
        report(smoke_check(root, folder, python, bool(info["cuda"])))
    return int(not all(check.ok for check in checks))


if __name__ == "__main__":
    sys.exit(main())
