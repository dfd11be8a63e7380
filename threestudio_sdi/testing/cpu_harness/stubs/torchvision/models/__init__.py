"""Stand-in for torchvision.models: every name raises when used (CPU test harness)."""


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)

    def unavailable(*args, **kwargs):
        raise RuntimeError(f"torchvision.models.{name} is not available in the CPU test harness")

    return unavailable
