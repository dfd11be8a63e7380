"""Stand-in for torchvision (CPU test harness; see ../README.md). Not torchvision."""

__version__ = "0.0.0+threestudio-cpu-stub"
