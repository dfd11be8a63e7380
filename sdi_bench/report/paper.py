"""The SDI paper's Table 1 (Lukoianov et al., NeurIPS 2024): 43 prompts × 50 views, A6000, threestudio."""

from __future__ import annotations

PAPER_TABLE1_HEADER = (
    "method (threestudio)",
    "CLIP ↑ (ViT-B/32, torchmetrics)",
    "CLIP-IQA quality %",
    "sharpness %",
    "real %",
    "ImageReward ↑",
    "diverged %",
    "time (A6000)",
    "VRAM",
)
PAPER_TABLE1 = (
    ("SDS, 10k steps", "29.81±2.49", "76±6.6", "99±1.2", "98±2.4", "−1.51±0.83", "18.6", "66 min", "6.2 GB"),
    (
        "VSD, 25k steps",
        "33.31±2.39",
        "77±6.7",
        "98±1.3",
        "96±4.4",
        "−1.17±0.58",
        "23.2",
        "334 min",
        "47.9 GB",
    ),
    (
        "HiFA, 25k steps",
        "32.80±2.35",
        "81±6.5",
        "98±1.5",
        "97±1.2",
        "−1.16±0.69",
        "4.7",
        "235 min",
        "46.4 GB",
    ),
    ("SDI, 10k steps", "33.47±2.49", "82±6.3", "98±1.3", "97±1.2", "−1.18±0.59", "4.7", "119 min", "39.2 GB"),
)
PAPER_NOTE = (
    "Paper: CLIP-IQA prompt pairs quality (Good/Bad photo), sharpness (Sharp/Blurry photo), real "
    "(Real/Abstract photo); diverged = out of memory or an empty volume; VRAM = mean over runs of the peak. "
    "A 2026 re-run of SDI on the same prompts with other CLIP models reported CLIP 29.7: compare numbers "
    "only under the same metric models."
)


def paper_table_markdown() -> list[str]:
    """The paper's Table 1 as Markdown lines."""
    lines = ["| " + " | ".join(PAPER_TABLE1_HEADER) + " |", "|" + "---|" * len(PAPER_TABLE1_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in PAPER_TABLE1]
    return [*lines, "", PAPER_NOTE]
