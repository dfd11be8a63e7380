"""The extension's two ways in, without threestudio: the root ``__init__.py`` as threestudio's loader runs
it, the pip + drop-in writer, the version guard and requirements.txt (tests/test_threestudio_install.py
installs both ways into real threestudio clones)."""

from __future__ import annotations

import filecmp
import importlib
import importlib.util
import pathlib
import sys

import pytest
from threestudio_standin.activate import standin_threestudio

from threestudio_sdi import extension

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_like_threestudio(folder: pathlib.Path):
    """What launch.py's ``load_custom_module`` does with ``custom/<name>``: its __init__.py as ``<name>``."""
    spec = importlib.util.spec_from_file_location(folder.name, folder / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[folder.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[folder.name]
    return module


def test_the_root_registers_our_names_when_threestudio_loads_it(monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(REPO)])
    with standin_threestudio() as threestudio:
        module = load_like_threestudio(REPO)
        assert module.REGISTERED_NAMES == ("sdi-guidance", "sdi-ext-system", "sdi-guidance-state")
        assert threestudio.find("sdi-guidance") is module.SDIGuidance
        assert threestudio.find("sdi-ext-system") is module.SDIExtSystem
        mixin = importlib.import_module("threestudio_sdi.threestudio").GuidanceStateMixin
        assert threestudio.find("sdi-guidance-state") is mixin
        assert sys.path[0] == str(REPO)  # the package beside it comes first: the same checkout's code


def test_the_root_registers_nothing_without_threestudio(monkeypatch):
    """pytest imports the root as a package (it has an __init__.py): no threestudio, no plugin."""
    monkeypatch.delitem(sys.modules, "threestudio", raising=False)
    assert not hasattr(load_like_threestudio(REPO), "REGISTERED_NAMES")


def test_an_old_threestudio_is_refused_with_one_message():
    with standin_threestudio() as threestudio:
        threestudio.__version__ = "0.2.2"
        with pytest.raises(ImportError) as caught:
            importlib.import_module("threestudio_sdi.threestudio")
    message = str(caught.value)
    assert message.startswith("threestudio-sdi needs threestudio >= 0.2.3, found 0.2.2 at ")
    assert message.endswith("update it (git pull in your threestudio clone)")


@pytest.mark.parametrize(("text", "parsed"), [("0.2.3", (0, 2, 3)), ("0.3.0.dev1", (0, 3, 0)), ("dev", ())])
def test_versions_are_compared_as_numbers(text, parsed):
    assert extension.parse_version(text) == parsed
    assert (
        extension.parse_version("0.10.0")
        > extension.MIN_THREESTUDIO_VERSION
        > extension.parse_version("0.2.2")
    )


def fake_threestudio(root: pathlib.Path) -> pathlib.Path:
    (root / "custom").mkdir(parents=True)
    (root / "launch.py").write_text("")
    return root


def test_the_drop_in_is_an_init_that_imports_the_package_and_a_copy_of_the_configs(tmp_path, capsys):
    root = fake_threestudio(tmp_path / "threestudio")
    assert extension.main([str(root)]) == 0
    target = root / "custom" / "threestudio-sdi"
    assert capsys.readouterr().out.startswith(f"wrote {target}: run launch.py from {root}")
    assert (target / "__init__.py").read_text() == extension.DROP_IN_INIT
    configs = sorted(path.name for path in (REPO / "configs").glob("*.yaml"))
    assert sorted(path.name for path in (target / "configs").iterdir()) == configs
    assert not any((target / "configs" / name).is_symlink() for name in configs)
    assert filecmp.cmpfiles(REPO / "configs", target / "configs", configs, shallow=False)[0] == configs
    (target / "configs" / "sdi.yaml").write_text("stale")
    assert extension.main([str(root)]) == 0  # written again: the configs of this version
    assert filecmp.cmp(REPO / "configs" / "sdi.yaml", target / "configs" / "sdi.yaml", shallow=False)


def test_the_drop_in_refuses_a_git_clone_and_a_folder_without_launch_py(tmp_path, capsys):
    root = fake_threestudio(tmp_path / "threestudio")
    clone = root / "custom" / "threestudio-sdi"
    clone.mkdir()
    (clone / "__init__.py").write_text("# a git clone of threestudio-sdi\n")
    assert extension.main([str(root)]) == 2
    assert "exists and is not a drop-in written by this command" in capsys.readouterr().err
    assert (clone / "__init__.py").read_text() == "# a git clone of threestudio-sdi\n"
    assert not (clone / "configs").exists()
    assert extension.main([str(tmp_path / "nowhere")]) == 2
    assert "is not a threestudio checkout (it has no launch.py)" in capsys.readouterr().err


def test_requirements_name_packages_without_versions():
    """``pip install -r requirements.txt`` never changes a version threestudio pinned: pip leaves an
    installed package alone when a requirement names no version (tests/test_threestudio_install.py asks
    pip itself, in an environment with threestudio's pins)."""
    lines = (REPO / "requirements.txt").read_text().splitlines()
    names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert names and all(name.replace("-", "_").isidentifier() for name in names), names
