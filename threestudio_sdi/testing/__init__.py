"""Fixtures that tests and benchmarks share, never imported by the plugin: exact-score analytic models
(:mod:`.gaussian`, :mod:`.mixture`), random Stable Diffusion stacks built offline (:mod:`.tiny_sd`,
:mod:`.sd21_random`), same-math execution variants (:mod:`.variants`), the pixel-space backbone of
known-answer runs (:mod:`.pixel_backbone`) and the harness that runs the real threestudio on a CPU
(:mod:`.cpu_harness`)."""
