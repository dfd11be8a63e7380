"""Procedural ground-truth assets of the 3D lab: classes × variants, sharp texture and geometric detail.

Every asset is a :class:`~threestudio_sdi.experimental.lab3d.renderer.VoxelGrid` built from a signed distance f(p)
and a two-colour texture index τ(p) ∈ {0, 1} evaluated at every voxel centre p = (x, y, z):

    σ(p) = σ_max · clamp(½ − f(p)/h, 0, 1),      c(p) = palette[τ(p)],

h the voxel size: a surface anti-aliased over one voxel, opaque inside (σ_max·h ≈ 2.6 at R = 32, so a
ray is ~90 % absorbed within one voxel), and a texture whose two colours meet in a step — the sharpest
edge the trilinear grid can hold. The texture is defined in all of space (not just on the surface), so
trilinear interpolation at the surface never blends in an undefined colour.

Classes (the shape family, shared by the class's variants) and what a variant changes:

* ``ball``: sphere of radius 0.6 with n meridional grooves (depth 0.1) — n, the groove phase, and a
  checker of m latitude bands × k longitude sectors;
* ``tower``: cylinder of radius 0.4, half-height 0.55, crenellated top (n merlons) and ring grooves —
  n, the ring spacing, and k vertical stripes, sheared by w stripes per unit height;
* ``crate``: cube of half-size 0.45 with recessed face panels (depth 0.06) — the panel margin, and a checker
  of cell size a (random offset) on each face.

* ``orb`` (the **equal-mean class**, not in the default :data:`CLASS_NAMES`): a plain sphere of radius 0.6
  whose variants share one palette and cover half its surface with each colour, so that they have the
  same mean colour over the surface and differ only in structure — variant v is pattern v of
  :data:`ORB_PATTERNS` (latitude bands of equal area, longitude sectors, their checker, a spiral), its
  count drawn. On the shared colour form of consistent noise, whose mechanism runs through the
  variants' mean colours, this class is the control (``docs/lab3d.md``).

Each variant of the other classes draws its own palette: a bright colour of hue u and a dark colour of the opposite hue,
the hues of a class's variants a golden-ratio turn apart (so variants differ in colour as well as
pattern, :func:`_palette`), and its
discrete parameters without replacement from the class's option lists (so two variants never share
them). All draws are seeded by (seed, class, variant) strings (:class:`VariantDraws`): a variant does not
depend on how many others are made. At most :data:`MAX_VARIANTS` variants per class.
"""

from __future__ import annotations

import colorsys
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ...errors import check_choice, check_int
from .renderer import BOX_HALF_SIZE, VoxelGrid

MAX_DENSITY = 40.0
"""σ_max, the density inside an asset (per unit length of the [−1, 1]³ box)."""
MAX_VARIANTS = 4
CLASS_NAMES = ("ball", "tower", "crate")

ShapeAndTexture = tuple[Tensor, Tensor, str]  # signed distance, texture index, description


class VariantDraws:
    """The seeded parameter draws of one variant of one class."""

    def __init__(self, seed: int, class_name: str, variant: int) -> None:
        self.prefix = f"{seed}/{class_name}"
        self.variant = variant
        self.rng = random.Random(f"{self.prefix}/{variant}")

    def distinct(self, what: str, options: Sequence) -> object:
        """This variant's entry of a seeded permutation of ``options``: no two variants share it."""
        order = random.Random(f"{self.prefix}/{what}").sample(range(len(options)), len(options))
        return options[order[self.variant]]

    def uniform(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high)

    def class_uniform(self, what: str) -> float:
        """A U[0, 1) draw shared by every variant of the class."""
        return random.Random(f"{self.prefix}/{what}").random()

    def choice(self, options: Sequence) -> object:
        return self.rng.choice(options)


def _carve(distance: Tensor, region: Tensor) -> Tensor:
    """The signed distance of a shape with a region removed: max(f, −f_region)."""
    return torch.maximum(distance, -region)


def _ball(x: Tensor, y: Tensor, z: Tensor, draws: VariantDraws) -> ShapeAndTexture:
    grooves = draws.distinct("grooves", (3, 4, 5, 6))
    bands = draws.distinct("bands", (3, 4, 5, 6))
    sectors = draws.distinct("sectors", (6, 8, 10, 12))
    phase = draws.uniform(0, 2 * math.pi)
    radius = (x * x + y * y + z * z).sqrt()
    azimuth = torch.atan2(y, x)
    groove = (torch.cos(grooves * (azimuth - phase)) > 0.7).to(x.dtype)
    distance = radius - 0.6 + 0.1 * groove
    latitude = torch.asin((z / radius.clamp_min(1e-9)).clamp(-1, 1))
    band = torch.floor((latitude / math.pi + 0.5) * bands)
    sector = torch.floor((azimuth - phase) / (2 * math.pi) * sectors)
    texture = torch.remainder(band + sector, 2)
    return distance, texture, f"{grooves} grooves, {bands}x{sectors} checker"


def _tower(x: Tensor, y: Tensor, z: Tensor, draws: VariantDraws) -> ShapeAndTexture:
    merlons = draws.distinct("merlons", (3, 4, 5, 6))
    ring_spacing = draws.distinct("rings", (0.2, 0.25, 0.3, 0.35))
    stripes = draws.distinct("stripes", (6, 8, 10, 12))
    twist = draws.choice((-1.5, 0.0, 1.5))
    radial = (x * x + y * y).sqrt()
    azimuth = torch.atan2(y, x)
    distance = torch.maximum(radial - 0.4, z.abs() - 0.55)
    gap = torch.cos(merlons * azimuth) * 0.4 / merlons  # ≈ arc length into a gap between merlons (< 0)
    distance = _carve(distance, torch.maximum(0.4 - z, gap))
    ring = torch.remainder(z + 0.55, ring_spacing) < 0.05
    distance = distance + 0.05 * (ring & (z < 0.35)).to(x.dtype)
    texture = torch.remainder(torch.floor(stripes * azimuth / (2 * math.pi) + twist * z), 2)
    return (
        distance,
        texture,
        f"{merlons} merlons, rings every {ring_spacing}, {stripes} stripes, twist {twist}",
    )


def _crate(x: Tensor, y: Tensor, z: Tensor, draws: VariantDraws) -> ShapeAndTexture:
    margin = draws.distinct("margin", (0.1, 0.15, 0.2, 0.25))
    cell = draws.distinct("cell", (0.2, 0.25, 0.3, 0.35))
    offset = [draws.uniform(0, cell) for _ in range(3)]
    half = 0.45
    extent = torch.stack([x.abs(), y.abs(), z.abs()])
    distance = extent.amax(dim=0) - half
    # Each face's panel: its inner square (``margin`` from every edge), carved 0.06 deep. The texture is
    # a checker in the two coordinates along the face, so it does not change with depth.
    face = extent.argmax(dim=0)
    inner = half - margin
    index = torch.zeros_like(x)
    coordinates, panel = (x, y, z), torch.full_like(x, math.inf)
    for axis in range(3):
        u, v = (a for a in range(3) if a != axis)
        on_face = face == axis
        region = torch.maximum(half - 0.06 - extent[axis], torch.maximum(extent[u], extent[v]) - inner)
        panel = torch.where(on_face, region, panel)
        checker = torch.floor((coordinates[u] + offset[u]) / cell) + torch.floor(
            (coordinates[v] + offset[v]) / cell
        )
        index = torch.where(on_face, checker, index)
    distance = _carve(distance, panel)
    texture = torch.remainder(index, 2)
    return distance, texture, f"panel margin {margin}, checker cell {cell}"


ORB_PATTERNS = ("bands", "sectors", "checker", "spiral")
"""The structure of each variant of the equal-mean class ``orb``, by variant index."""


def _orb(x: Tensor, y: Tensor, z: Tensor, draws: VariantDraws) -> ShapeAndTexture:
    """A sphere of radius 0.6, half of its surface in each colour; the variant chooses the structure.

    Area on a sphere is uniform in z (Archimedes), so m latitude bands of equal height in z have equal
    area; k longitude sectors of equal angle too; an even m and k give each colour half the surface.
    """
    pattern = ORB_PATTERNS[draws.variant % len(ORB_PATTERNS)]
    count = draws.distinct("count", (4, 6, 8))
    radius = (x * x + y * y + z * z).sqrt()
    azimuth = torch.atan2(y, x)
    height = (z / radius.clamp_min(1e-9)).clamp(-1, 1)  # z on the unit sphere, uniform in area
    band = torch.floor((height + 1) / 2 * count)
    sector = torch.floor((azimuth + math.pi) / (2 * math.pi) * (count + 2))
    index = {
        "bands": band,
        "sectors": sector,
        "checker": torch.floor((height + 1) / 2 * 4) + sector,
        "spiral": torch.floor((azimuth + math.pi) / (2 * math.pi) * count + 2 * height),
    }[pattern]
    texture = torch.remainder(index, 2)
    return radius - 0.6, texture, f"{pattern}, {count}"


def _shared_palette(draws: VariantDraws) -> Tensor:
    """[2, 3]: one bright and one dark colour of opposite hues for every variant of the class."""
    hue = draws.class_uniform("hue")
    bright = colorsys.hsv_to_rgb(hue, 0.75, 0.9)
    dark = colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.7, 0.3)
    return torch.tensor([bright, dark], dtype=torch.float64)


BUILDERS: dict[str, Callable[..., ShapeAndTexture]] = {
    "ball": _ball,
    "tower": _tower,
    "crate": _crate,
    "orb": _orb,
}
EQUAL_MEAN_CLASS = "orb"
"""The class whose variants share one mean colour (module docstring)."""
PALETTES: dict[str, Callable[[VariantDraws], Tensor]] = {EQUAL_MEAN_CLASS: _shared_palette}
"""Classes whose palette is not :func:`_palette` (one per variant)."""


def _palette(draws: VariantDraws) -> Tensor:
    """[2, 3]: a bright colour of hue u_v and a dark one of the opposite hue.

    u_v = u_0 + v/φ (mod 1) plus a jitter of ±0.03, φ the golden ratio and u_0 drawn per class: the
    hues of a class's variants stay far apart (0, 0.62, 0.24, 0.85 turns for v = 0..3) whatever their
    number, so a variant's colours do not depend on how many variants are made.
    """
    hue = (
        draws.class_uniform("hue") + draws.variant * 2 / (1 + math.sqrt(5)) + draws.uniform(-0.03, 0.03)
    ) % 1.0
    bright = colorsys.hsv_to_rgb(hue, 0.75, 0.9)
    dark = colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.7, 0.3)
    return torch.tensor([bright, dark], dtype=torch.float64)


@dataclass(frozen=True)
class AssetSet:
    """Ground-truth assets: a stacked grid [K, ...], the class of each, and a description of each."""

    grid: VoxelGrid
    classes: Tensor
    class_names: tuple[str, ...]
    descriptions: tuple[str, ...]

    @property
    def num_assets(self) -> int:
        return int(self.classes.numel())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def members(self, class_index: int) -> Tensor:
        """Indices (into the stack) of the variants of class ``class_index``, in variant order."""
        if not 0 <= class_index < self.num_classes:
            raise ValueError(f"class must be in 0..{self.num_classes - 1}, got {class_index}")
        return torch.nonzero(self.classes == class_index).flatten()


def make_assets(
    resolution: int = 32,
    variants_per_class: int = 3,
    class_names: Sequence[str] = CLASS_NAMES,
    seed: int = 0,
) -> AssetSet:
    """Every class's variants as one float64 :class:`AssetSet` (module docstring)."""
    resolution = check_int("resolution", resolution, low=8)
    variants = check_int("variants_per_class", variants_per_class, low=1)
    if variants > MAX_VARIANTS:
        raise ValueError(f"variants_per_class must be <= {MAX_VARIANTS}, got {variants}")
    if not class_names:
        raise ValueError("class_names must name at least one class")
    for name in class_names:
        check_choice("class name", name, tuple(BUILDERS))
    line = torch.linspace(-BOX_HALF_SIZE, BOX_HALF_SIZE, resolution, dtype=torch.float64)
    z, y, x = torch.meshgrid(line, line, line, indexing="ij")
    voxel = 2 * BOX_HALF_SIZE / (resolution - 1)
    densities, colours, classes, descriptions = [], [], [], []
    for class_index, name in enumerate(class_names):
        for variant in range(variants):
            draws = VariantDraws(seed, name, variant)
            distance, texture, description = BUILDERS[name](x, y, z, draws)
            palette = PALETTES.get(name, _palette)(draws)
            densities.append(MAX_DENSITY * (0.5 - distance / voxel).clamp(0, 1))
            colours.append(palette[texture.long()].permute(3, 0, 1, 2))
            classes.append(class_index)
            descriptions.append(f"{name} #{variant}: {description}")
    grid = VoxelGrid(torch.stack(densities), torch.stack(colours))
    return AssetSet(grid, torch.tensor(classes), tuple(class_names), tuple(descriptions))
