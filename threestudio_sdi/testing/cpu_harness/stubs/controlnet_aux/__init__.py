"""Stand-in for controlnet_aux (CPU test harness; see ../README.md)."""


class _Unavailable:
    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError(f"controlnet_aux.{type(self).__name__} is not available in the CPU test harness")


class CannyDetector(_Unavailable):
    pass


class NormalBaeDetector(_Unavailable):
    pass
