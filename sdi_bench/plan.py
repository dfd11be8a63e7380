"""A plan: prompts × methods × seeds, each run with its threestudio arguments, a config hash and an id
that ends with it (a run is its config: another config is another run)."""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import BenchError
from .methods import Method, check_overrides
from .overrides import PROMPT_KEY, text_override
from .suites import Suite, prompt_slug

MAX_SEED = 2**32 - 1
"""threestudio seeds Lightning's ``seed_everything``, which takes 0 … 2³² − 1."""
MAX_SEEDS = 1000
"""Seeds of one plan at most (each seed is a run of every prompt and method)."""


@dataclass(frozen=True)
class PlannedRun:
    """One training run: a method on a prompt with a seed.

    ``args`` are the threestudio command-line overrides of the run (method overrides, then the
    benchmark-wide ``--set`` overrides, then the prompt, seed and tag), without the attempt's output
    folder; ``config_hash`` fingerprints everything that decides the result, and ends ``run_id``
    (``<method>/<prompt slug>/seed<s>/<hash[:8]>``); ``setup_hash`` fingerprints the method's part
    (config file, overlays, overrides), which the report uses to keep two setups of a method apart.
    """

    run_id: str
    method: str
    prompt: str
    prompt_index: int
    seed: int
    config: str
    overlays: tuple[str, ...]
    args: tuple[str, ...]
    config_hash: str
    setup_hash: str


@dataclass(frozen=True)
class Plan:
    """The runs of a benchmark, in execution order (seed, prompt, method: early results cover every method)."""

    suite: str
    methods: tuple[Method, ...]
    seeds: tuple[int, ...]
    runs: tuple[PlannedRun, ...]


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` or ``"0-4"`` → seeds (:func:`threestudio_sdi.errors.parse_seeds`); BenchError naming a
    bad entry, a range that runs backwards, a seed above :data:`MAX_SEED` or more than :data:`MAX_SEEDS`."""
    count = 0
    for entry in filter(None, (part.strip() for part in text.split(","))):
        low, dash, high = entry.partition("-")
        bounds = (low, high) if dash and low else (entry,)
        if not all(bound.isascii() and bound.isdigit() for bound in bounds):
            continue  # the parser below names it
        values = [int(bound) for bound in bounds]
        if values[-1] < values[0]:
            raise BenchError(f"--seeds entry {entry!r} runs backwards: write {high}-{low}")
        if values[-1] > MAX_SEED:
            raise BenchError(
                f"--seeds entry {entry!r}: seed {values[-1]} is above {MAX_SEED}, the largest seed threestudio "
                "takes (Lightning's seed_everything)"
            )
        count += values[-1] - values[0] + 1
        if count > MAX_SEEDS:
            raise BenchError(
                f"--seeds {text!r} gives more than {MAX_SEEDS} seeds (each seed is a run of every prompt and "
                "method): give fewer"
            )
    from threestudio_sdi.errors import parse_seeds as seed_tuple  # imports torch: only when seeds are parsed

    try:
        return seed_tuple("--seeds", text)
    except ValueError as error:
        raise BenchError(str(error)) from None


def file_digest(path: pathlib.Path, where: str) -> str:
    """sha256 of a file's bytes; BenchError if it cannot be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise BenchError(f"{where}: cannot read {path} ({error.strerror or error})") from None


def digest(value: object) -> str:
    """16 hex digits of the sha256 of ``value`` as sorted JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def run_args(method: Method, settings: Sequence[str], prompt: str, seed: int, tag: str) -> tuple[str, ...]:
    """The threestudio overrides of one run; the prompt arrives exactly (:mod:`.overrides`)."""
    return (
        *method.overrides,
        *settings,
        text_override(PROMPT_KEY, prompt),
        f"seed={seed}",
        f"tag={tag}",
        "use_timestamp=false",
    )


def build_plan(
    suite: Suite,
    methods: Sequence[Method],
    seeds: Sequence[int],
    settings: Sequence[str] = (),
    overlays: Sequence[str | pathlib.Path] = (),
) -> Plan:
    """Every prompt × method × seed of the benchmark.

    Args:
        suite: the prompts.
        methods: the methods (configs and overrides).
        seeds: threestudio seeds (``seed=`` override).
        settings: ``--set key=value`` overrides applied to every run after the method's own.
        overlays: YAML files merged over every method's config (e.g. a CPU or site overlay).
    """
    settings = check_overrides(list(settings), "--set")
    overlay_paths = tuple(pathlib.Path(path).expanduser().resolve() for path in overlays)
    overlay_digests = [file_digest(path, "--overlay") for path in overlay_paths]
    runs: list[PlannedRun] = []
    config_digests = {
        method.name: file_digest(method.config, f"method {method.name!r} config") for method in methods
    }
    setups = {
        method.name: digest(
            [
                method.name,
                config_digests[method.name],
                overlay_digests,
                list(method.overrides),
                list(settings),
            ]
        )
        for method in methods
    }
    for seed in seeds:
        for index, prompt in enumerate(suite.prompts):
            slug = prompt_slug(prompt)
            for method in methods:
                args = run_args(method, settings, prompt, seed, f"{slug}-seed{seed}")
                config_hash = digest([method.name, config_digests[method.name], overlay_digests, list(args)])
                runs.append(
                    PlannedRun(
                        run_id=f"{method.name}/{slug}/seed{seed}/{config_hash[:8]}",
                        method=method.name,
                        prompt=prompt,
                        prompt_index=index,
                        seed=seed,
                        config=str(method.config),
                        overlays=tuple(str(path) for path in overlay_paths),
                        args=args,
                        config_hash=config_hash,
                        setup_hash=setups[method.name],
                    )
                )
    return Plan(suite=suite.name, methods=tuple(methods), seeds=tuple(seeds), runs=tuple(runs))


@dataclass(frozen=True)
class GpuHours:
    """Expected GPU-hours of a method's runs in a plan (None when its minutes per run are unknown)."""

    method: str
    runs: int
    minutes_per_run: float | None
    hours: float | None
    source: str


def gpu_hours(plan: Plan) -> list[GpuHours]:
    """Per method: runs × minutes per run (the paper's timings for the built-ins)."""
    counts = {method.name: 0 for method in plan.methods}
    for run in plan.runs:
        counts[run.method] += 1
    return [
        GpuHours(
            method=method.name,
            runs=counts[method.name],
            minutes_per_run=method.minutes,
            hours=None if method.minutes is None else counts[method.name] * method.minutes / 60.0,
            source=method.minutes_source,
        )
        for method in plan.methods
    ]
