"""Stand-in for tiny-cuda-nn (CPU test harness; see ../README.md): enough for `import threestudio`."""


def free_temporary_memory() -> None:
    pass


class _Unavailable:
    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError(
            f"tinycudann.{type(self).__name__} is not available in the CPU test harness; "
            "use the ProgressiveBandFrequency encoding and VanillaMLP"
        )


class Encoding(_Unavailable):
    pass


class Network(_Unavailable):
    pass


class NetworkWithInputEncoding(_Unavailable):
    pass
