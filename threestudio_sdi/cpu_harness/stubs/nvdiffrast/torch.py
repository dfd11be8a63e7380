"""Stand-in for nvdiffrast.torch: every name raises when used (CPU test harness)."""


def __getattr__(name: str):
    def unavailable(*args, **kwargs):
        raise RuntimeError(f"nvdiffrast.torch.{name} is not available in the CPU test harness")

    return unavailable
