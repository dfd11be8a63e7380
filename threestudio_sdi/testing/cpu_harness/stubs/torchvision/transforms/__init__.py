"""Stand-in for torchvision.transforms (CPU test harness)."""
