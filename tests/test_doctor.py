"""sdi-doctor's checks, each fed what a probe of a real environment reports (no threestudio needed).

The probe itself (threestudio's own loader, the configs, the smoke run through launch.py) runs against
real threestudio clones in tests/test_threestudio_install.py.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from threestudio_sdi import doctor
from threestudio_sdi.extension import DROP_IN_INIT, config_dir
from threestudio_sdi.models.model_source import DEFAULT_MODEL_ID, PIPELINE_PARTS

REPO = pathlib.Path(__file__).resolve().parents[1]
PINNED = {
    "torch": "2.13.0",
    "diffusers": "0.19.3",
    "transformers": "4.28.1",
    "huggingface_hub": "0.25.2",
    "omegaconf": "2.3.0",
    "nerfacc": "0.5.3",
    "tinycudann": "1.7",
    "nvdiffrast": "0.3.3",
}
GPU = {"device": "NVIDIA A100-SXM4-80GB", "version": "12.1", "free_gb": 30.0}


def info(**changes) -> dict:
    """A probe's report of a working GPU machine, with ``changes``."""
    return {"versions": dict(PINNED), "errors": {}, "cuda": dict(GPU), **changes}


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {check.name: check for check in checks}


def test_a_line_is_a_mark_what_was_found_and_after_a_failure_the_fix():
    assert str(doctor.Check(True, "torch", "2.13.0", "never shown")) == "✓ torch: 2.13.0"
    failed = doctor.Check(False, "model", "x cannot be loaded", "use a mirror:\n  key=value")
    assert str(failed) == "✗ model: x cannot be loaded\n    fix: use a mirror:\n      key=value"


@pytest.mark.parametrize(
    ("version", "ok"), [("0.2.3", True), ("0.10.0", True), ("0.3.0.dev1", True), ("0.2.2", False)]
)
def test_the_threestudio_version_is_compared_as_numbers(tmp_path, version, ok):
    (tmp_path / "threestudio").mkdir()
    (tmp_path / "threestudio" / "__init__.py").write_text(f'__modules__ = {{}}\n__version__ = "{version}"\n')
    (tmp_path / "launch.py").write_text("")
    check = doctor.threestudio_check(tmp_path)
    assert check.ok is ok and check.found == f"{version} in {tmp_path}"
    assert "needs >= 0.2.3: git pull in" in check.fix


def test_a_folder_without_threestudio_is_named(tmp_path):
    check = doctor.threestudio_check(tmp_path)
    assert not check.ok and "has no launch.py" in check.found and "threestudio-project" in check.fix
    assert doctor.main(["--threestudio", str(tmp_path)]) == 1


def test_packages_are_checked_against_threestudios_pins():
    assert all(check.ok for check in doctor.package_checks(info()))
    broken = info(
        versions={**PINNED, "diffusers": "0.30.0", "huggingface_hub": "0.26.0", "tinycudann": None},
        errors={"nerfacc": "ImportError: libcudart.so.12: cannot open shared object file"},
        cuda=False,
    )
    checks = by_name(doctor.package_checks(broken))
    failed = {name for name, check in checks.items() if not check.ok}
    assert failed == {"diffusers", "huggingface_hub", "tinycudann", "nerfacc", "CUDA"}
    assert checks["diffusers"].found == "0.30.0 (works: >= 0.19.3, < 0.20)"
    assert checks["diffusers"].fix == 'pip install "diffusers>=0.19.3,<0.20"'
    assert checks["huggingface_hub"].fix == 'pip install "huggingface_hub<0.26"'
    assert checks["tinycudann"].found == "not installed" and "tiny-cuda-nn" in checks["tinycudann"].fix
    assert "but its import fails: ImportError: libcudart" in checks["nerfacc"].found
    assert checks["CUDA"].found == "no CUDA device" and "CUDA build of torch" in checks["CUDA"].fix
    assert not by_name(doctor.package_checks(info(versions={**PINNED, "transformers": "4.29.0"})))[
        "transformers"
    ].ok


def test_free_gpu_memory_is_compared_with_each_configs_stated_need():
    """The need is the ``# GPU memory:`` line of each config's header: every config has one."""
    names = sorted(path.name for path in config_dir().glob("*.yaml"))
    checks = by_name(doctor.memory_checks(info(), config_dir()))
    assert sorted(checks) == [f"GPU memory for {name}" for name in names]
    assert checks["GPU memory for sdi.yaml"].found == "about 40 GB needed, 30.0 GB free"
    assert checks["GPU memory for vsd.yaml"].found == "about 48 GB needed, 30.0 GB free"
    assert checks["GPU memory for sdi-2view.yaml"].found == "more than 40 GB needed, 30.0 GB free"
    fits = {f"GPU memory for {name}" for name in ("sdi-24gb.yaml", "sdi-gs.yaml", "sds-gs.yaml")}
    assert {name for name, check in checks.items() if check.ok} == fits  # the ~24 GB ones
    roomy = doctor.memory_checks(info(cuda={**GPU, "free_gb": 79.3}), config_dir())
    assert all(check.ok for check in roomy) and doctor.memory_checks(info(cuda=False), config_dir()) == []


def registered(folder: str) -> dict:
    return {"sdi-guidance": f"/x/{folder}/guidance.py", "sdi-ext-system": f"/x/{folder}/system.py"}


def probed(**changes) -> dict:
    configs = {path.name: None for path in config_dir().glob("*.yaml")}
    base = {
        "stand_ins": [],
        "import_failed": [],
        "custom": ["threestudio-sdi"],
        "extension": "threestudio-sdi",
    }
    return {
        **info(),
        **base,
        "registered": registered("threestudio_sdi/threestudio"),
        "configs": configs,
        "configs_needing": {},
        **changes,
    }


@pytest.mark.parametrize("install", ["git clone", "drop-in"])
def test_registration_names_the_install_and_the_files(tmp_path, install):
    folder = tmp_path / "custom" / "threestudio-sdi"
    (folder / ("threestudio_sdi" if install == "git clone" else "configs")).mkdir(parents=True)
    (folder / "__init__.py").write_text(DROP_IN_INIT if install == "drop-in" else "# the repository's root\n")
    names, configs = doctor.registration_checks(probed(stand_ins=["tinycudann"]), tmp_path)
    assert names.ok and f"registered by custom/threestudio-sdi ({install}) from /x/" in names.found
    assert names.found.endswith("(stand-ins for tinycudann)")
    count = len(list(config_dir().glob("*.yaml")))
    assert configs.ok and configs.found == f"{count} of {count} in custom/threestudio-sdi/configs load"


def test_registration_failures_say_what_failed_and_how_to_install(tmp_path):
    (tmp_path / "custom" / "threestudio-sdi").mkdir(parents=True)
    (tmp_path / "custom" / "threestudio-sdi" / "__init__.py").write_text(DROP_IN_INIT)
    (missing,) = doctor.registration_checks(
        probed(extension=None, registered={}, custom=["put_custom_extensions_here"]), tmp_path
    )
    assert (
        not missing.ok
        and missing.found == "no folder of custom/ registers them (['put_custom_extensions_here'])"
    )
    assert "git clone" in missing.fix and "python -m threestudio_sdi.extension" in missing.fix
    error = "No module named 'threestudio_sdi'"
    (failed,) = doctor.registration_checks(
        probed(extension=None, registered={}, import_failed=[["custom/threestudio-sdi", error]]), tmp_path
    )
    assert failed.found == f"import failed: custom/threestudio-sdi: {error}"
    (threestudio,) = doctor.registration_checks(
        probed(threestudio_error="ImportError: cached_download"), tmp_path
    )
    assert threestudio.name == "import threestudio" and not threestudio.ok
    configs = doctor.registration_checks(
        probed(configs={"sdi.yaml": None, "vsd.yaml": "KeyError: x"}), tmp_path
    )[1]
    assert (
        not configs.ok
        and configs.found == "1 of 2 in custom/threestudio-sdi/configs load; vsd.yaml: KeyError: x"
    )
    # threestudio-3dgs's configs where it is not installed: said, not failed
    needing = {"sdi-gs.yaml": "gaussian-splatting-system"}
    configs = doctor.registration_checks(
        probed(configs={"sdi.yaml": None}, configs_needing=needing), tmp_path
    )[1]
    assert configs.ok and configs.found == (
        "1 of 1 in custom/threestudio-sdi/configs load; sdi-gs.yaml skipped: its gaussian-splatting-system "
        "comes from another extension, not installed"
    )


def test_a_complete_folder_is_a_model_and_a_missing_one_gets_the_mirrors(tmp_path):
    for part in PIPELINE_PARTS:
        if "." in part:
            (tmp_path / part).write_text("{}")
        else:
            (tmp_path / part).mkdir()
            (tmp_path / part / "config.json").write_text("{}")
    assert doctor.model_check(str(tmp_path)).ok
    missing = doctor.model_check(str(tmp_path / "nowhere"))
    assert not missing.ok and "there is no such folder" in missing.found
    assert DEFAULT_MODEL_ID in missing.fix and "/path/to/stable-diffusion-2-1-base" in missing.fix


def test_an_unreachable_model_id_is_a_failure_with_the_mirrors():
    """In a fresh interpreter with the hub offline: the default id is neither cached nor reachable."""
    code = (
        "from threestudio_sdi.doctor import model_check\n"
        "print(model_check('sd2-community/not-a-model-threestudio-sdi-tests'))"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": "/nonexistent-hf-home", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr
    first, *fix = result.stdout.strip().splitlines()
    assert (
        first.startswith("✗ model: system.guidance.pretrained_model_name_or_path=")
        and "not in the local" in first
    )
    assert any(DEFAULT_MODEL_ID in line for line in fix) and any("/path/to/" in line for line in fix)


def test_the_exit_status_is_one_when_any_check_fails(tmp_path, monkeypatch, capsys):
    (tmp_path / "threestudio").mkdir()
    (tmp_path / "threestudio" / "__init__.py").write_text('__version__ = "0.2.3"\n')
    (tmp_path / "launch.py").write_text("")
    (tmp_path / "custom" / "threestudio-sdi" / "threestudio_sdi").mkdir(parents=True)
    (tmp_path / "custom" / "threestudio-sdi" / "__init__.py").write_text("# the root\n")
    smoke = doctor.Check(True, "smoke run", "3 steps")
    monkeypatch.setattr(doctor, "smoke_check", lambda root, folder, python, cuda: smoke)
    monkeypatch.setattr(doctor, "model_check", lambda source: doctor.Check(True, "model", source))
    monkeypatch.setattr(doctor, "memory_checks", lambda report, configs: [])
    monkeypatch.setattr(doctor, "probe", lambda root, python: probed())
    assert doctor.main(["--threestudio", str(tmp_path)]) == 0
    assert all(line.startswith(("✓", "…")) for line in capsys.readouterr().out.splitlines())
    monkeypatch.setattr(doctor, "probe", lambda root, python: probed(cuda=False))
    assert doctor.main(["--threestudio", str(tmp_path)]) == 1
    assert "✗ CUDA: no CUDA device" in capsys.readouterr().out


def test_missing_extras_are_named_with_the_pip_line_at_start(tmp_path, monkeypatch, capsys):
    """Without diffusers and omegaconf the doctor still checks the rest, and says what to install first."""
    real = doctor.importlib.util.find_spec
    monkeypatch.setattr(
        doctor.importlib.util,
        "find_spec",
        lambda name: None if name in ("diffusers", "omegaconf") else real(name),
    )
    assert doctor.main(["--threestudio", str(tmp_path)]) == 1
    first = capsys.readouterr().out.splitlines()[:2]
    assert first == [
        "✗ sdi-doctor's own needs: diffusers, omegaconf missing: no model check, no smoke run",
        '    fix: pip install "diffusers>=0.19.3,<0.20" omegaconf==2.3.0',
    ]
