"""threestudio-side research: the noise-field sources of consistent noise, one per renderer.

Imported by :func:`threestudio_sdi.threestudio.noise_fields.noise_field_renderers` the first time a
strategy asks for a noise field fixed on the asset; each module below registers its source with
``register_noise_field(<renderer type>)``. Needs threestudio importable.
"""

from . import (
    gaussian_noise_field,  # noqa: F401  (diff-gaussian-rasterizer: threestudio-3dgs)
    nerf_noise_field,  # noqa: F401  (registers nerf-volume-renderer's source)
)
