"""Stand-in for nvdiffrast (CPU test harness; see ../README.md)."""
