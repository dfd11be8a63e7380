"""Stand-in for nvdiffrast.torch (CPU test harness): contexts construct, every operation raises.

threestudio's ``mesh-exporter`` builds a rasterizer context in ``configure`` but rasterizes only to
bake textures, so an export with ``system.exporter.save_texture=false`` runs; anything that
rasterizes (``nvdiff-rasterizer``, texture baking) raises naming the operation.
"""


class _Context:
    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


class RasterizeGLContext(_Context):
    pass


class RasterizeCudaContext(_Context):
    pass


def __getattr__(name: str):
    def unavailable(*args, **kwargs):
        raise RuntimeError(f"nvdiffrast.torch.{name} is CUDA-only: not available in the CPU test harness")

    return unavailable
