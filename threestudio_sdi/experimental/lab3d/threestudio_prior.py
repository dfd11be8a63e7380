"""The 3D lab's exact prior as a backbone of ``sdi-guidance`` (``system.guidance.model_factory``).

    system.guidance.model_factory: "threestudio_sdi.experimental.lab3d.threestudio_prior:exact_prior"
    system.guidance.model_options: {variants_per_class: 1}      # the lab's 3 classes, one variant each

:func:`exact_prior` builds the lab's known assets and its :class:`~threestudio_sdi.experimental.lab3d.ExactViewPrior`
(a view-conditioned pixel-space denoiser) with the one thing a pixel backbone asks beyond the denoiser
interface, ``prompt_condition``, which maps threestudio's prompt, a class name such as ``"ball"``, to its
class index, and wraps it in a :class:`~threestudio_sdi.testing.pixel_backbone.PixelBackbone`. This is
how the known-answer runs distil the lab's prior inside the real threestudio.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...testing.pixel_backbone import PixelBackbone
from .assets import CLASS_NAMES, make_assets
from .prior import DEFAULT_NOISE_STD, ExactViewPrior
from .renderer import RenderSettings

EXACT_PRIOR_FACTORY = f"{__name__}:exact_prior"
"""``system.guidance.model_factory`` of the exact prior."""


class PromptedExactPrior(ExactViewPrior):
    """:class:`ExactViewPrior` whose condition is named by a prompt: the name of one of its classes."""

    def prompt_condition(self, prompt: str) -> int:
        """The class index of ``prompt`` (a class name, case and surrounding spaces ignored)."""
        name = prompt.strip().lower()
        if name not in self.assets.class_names:
            raise ValueError(
                f"system.prompt_processor.prompt={prompt!r} names no class of the exact prior; "
                f"its classes: {', '.join(self.assets.class_names)}"
            )
        return self.assets.class_names.index(name)


def exact_prior(
    classes: Sequence[str] = CLASS_NAMES,
    variants_per_class: int = 1,
    asset_seed: int = 0,
    grid_resolution: int = 32,
    image_size: int = 32,
    samples_per_ray: int = 64,
    noise_std: float = DEFAULT_NOISE_STD,
) -> PixelBackbone:
    """The lab's assets of ``classes`` × ``variants_per_class`` and their exact prior (white background),
    as a backbone.

    Defaults are the lab's (``threestudio_sdi.experimental.lab3d.LabSettings``: every class, so that the
    unconditional branch of CFG mixes them) with one variant per class: the known-answer sanity setting.
    """
    assets = make_assets(grid_resolution, variants_per_class, tuple(classes), asset_seed)
    return PixelBackbone(PromptedExactPrior(assets, RenderSettings(image_size, samples_per_ray), noise_std))
