"""Stand-in for torchvision.transforms.functional: every name raises when used (CPU test harness)."""


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)

    def unavailable(*args, **kwargs):
        raise RuntimeError(
            f"torchvision.transforms.functional.{name} is not available in the CPU test harness"
        )

    return unavailable
