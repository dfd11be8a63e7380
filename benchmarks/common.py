"""Helpers shared by ``benchmarks/fidelity.py`` and ``benchmarks/cost.py``.

* :func:`distill` — the lab's image-space distillation (``threestudio_sdi.lab.distill.distill_2d``
  with ``update="exact"``) for any :class:`~threestudio_sdi.score_distillation.GuidanceConfig`, so that
  the research options of the config (``inversion_order``, ``skip_origin``, ...) can be swept; with a
  default config it returns exactly what ``distill_2d`` does (tested in ``tests/test_fast_options.py``);
* the machine description written into every result file;
* Markdown table formatting.
"""

from __future__ import annotations

import os
import pathlib
import platform
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from threestudio_sdi.cfg import Conditioning, guided_epsilon  # noqa: E402
from threestudio_sdi.ddim import sample_ddim  # noqa: E402
from threestudio_sdi.lab.distill import lab_timesteps  # noqa: E402
from threestudio_sdi.prediction import predict_x0  # noqa: E402
from threestudio_sdi.schedule import NoiseSchedule  # noqa: E402
from threestudio_sdi.score_distillation import GuidanceConfig, GuidanceOutput, guidance_step  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
Probe = Callable[[int, int, Tensor, GuidanceOutput], None]


def distill(
    model: Any,
    config: GuidanceConfig | None,
    steps: int = 50,
    seed: int = 0,
    batch: int = 1,
    cond: Any = None,
    guidance_scale: float = 7.5,
    cfg_mode: str = "standard",
    probe_steps: Sequence[int] = (),
    probe: Probe | None = None,
    on_step: Callable[[GuidanceOutput], None] | None = None,
) -> Tensor:
    """Image-space distillation with the exact update x0 ← ẑ0 (the lab's ``update="exact"``).

    ``config=None`` runs DDIM sampling itself (the lab's ``ddim``), with ``cfg_mode``; otherwise the
    config's ``cfg_mode`` (or preset) decides and ``guidance_scale`` must equal the config's. Starts
    from x_T ~ N(0, I) (the first draw of ``seed``) with x0 = x̂0(x_T), κ = ε̂(x_T), then one guidance
    step per remaining timestep of the lab's grid. ``probe(i, t, x0_before, output)`` runs at the step
    indices in ``probe_steps``; ``on_step(output)`` after every step.
    """
    schedule = NoiseSchedule.of_model(model)
    timesteps = lab_timesteps(steps, schedule.num_train_timesteps)
    conditioning = Conditioning(cond=cond)
    generator = torch.Generator().manual_seed(seed)
    dtype = getattr(model, "dtype", torch.float32)
    dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    shape = tuple(model.shape)
    x_T = torch.randn((batch, *shape), generator=generator, dtype=dtype)
    if config is None:
        return sample_ddim(model, x_T, timesteps, conditioning, guidance_scale, cfg_mode, disable=True)
    if config.guidance_scale != guidance_scale:
        raise ValueError(f"guidance_scale {guidance_scale} differs from the config's {config.guidance_scale}")
    mode = config.resolved_cfg_mode
    with torch.no_grad():
        kappa = guided_epsilon(model, x_T, timesteps[0], conditioning, guidance_scale, mode, schedule)
        x0 = predict_x0(x_T, kappa, schedule.alpha_bar(timesteps[0]))
    for i, t in enumerate(timesteps[1:], start=1):
        output = guidance_step(
            model,
            x0,
            t,
            conditioning,
            config,
            noise=kappa if config.noise == "cached" else None,
            generator=generator,
            schedule=schedule,
        )
        if probe is not None and i in probe_steps:
            probe(i, t, x0, output)
        if on_step is not None:
            on_step(output)
        if not output.target.isfinite().all():
            return torch.full_like(x0, float("nan"))
        x0 = output.target
        kappa = output.noise_pred
    return x0


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for name in ("diffusers", "transformers"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; floats with 3 significant digits, None as '–'."""

    def cell(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            if value != value:
                return "nan"
            return f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation of finite values; nan when there are none."""
    finite = [float(v) for v in values if v == v and abs(v) != float("inf")]
    if not finite:
        return float("nan"), float("nan")
    mean = sum(finite) / len(finite)
    return mean, (sum((v - mean) ** 2 for v in finite) / len(finite)) ** 0.5


def pm(values: Sequence[float]) -> str:
    """'mean ± std' over seeds (just the value for one seed)."""
    mean, std = mean_std(values)
    if mean != mean:
        return "nan"
    if len(values) == 1:
        return f"{mean:.3g}"
    return f"{mean:.3g} ± {std:.2g}"
