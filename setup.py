"""Installs threestudio-sdi: `pip install -e .` (product, labs, sdi-bench), `pip install -e ".[test]"` for the tests."""

from setuptools import find_packages, setup

DIFFUSERS = [
    # threestudio pins diffusers<0.20 and transformers==4.28.1: these ranges admit both pins and the
    # newest releases, so installing this package never upgrades a threestudio environment.
    "diffusers>=0.19.3",
    "transformers>=4.28.1",
    "safetensors",
]

BENCH = [
    # sdi-bench: submitit (Slurm arrays), torchmetrics >= 1.7 (CLIPScore / CLIP-IQA with a CLIP model we
    # load ourselves), Lightning for the callback injected into threestudio's Trainer (threestudio pins
    # lightning 2.0.0, which satisfies this), YAML for methods files and threestudio's parsed.yaml.
    "submitit>=1.5",
    "torchmetrics>=1.7",
    "transformers>=4.28.1",
    "pytorch_lightning>=2.0",
    "omegaconf",
    "pyyaml",
    "pillow",
]

setup(
    name="threestudio-sdi",
    version="0.1.0",
    description="Score Distillation via Reparametrized DDIM (SDI, NeurIPS 2024) as a threestudio extension",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=[
        *find_packages(include=["threestudio_sdi", "threestudio_sdi.*", "sdi_bench", "sdi_bench.*"]),
        "threestudio_sdi.configs",
    ],
    # The configs live at the repository's root (the extension's layout); a wheel carries them as
    # threestudio_sdi/configs (threestudio_sdi.extension.config_dir finds either).
    package_dir={"threestudio_sdi.configs": "configs"},
    package_data={
        "threestudio_sdi.configs": ["*.yaml"],
        "threestudio_sdi.testing.cpu_harness": ["stubs/*.md", "stubs/*/*.py", "stubs/*/*/*.py"],
        "sdi_bench": ["suites/*.txt"],
    },
    python_requires=">=3.9",
    install_requires=["torch>=2.0", "numpy", "tqdm", "matplotlib", "scikit-learn"],
    extras_require={
        "diffusers": DIFFUSERS,
        "bench": BENCH,
        # gsplat's pure-torch projection is the independent reference of the threestudio-3dgs CPU harness
        "test": [*DIFFUSERS, *BENCH, "pytest", "hypothesis", "omegaconf", "ruff", "gsplat==1.5.3"],
    },
    entry_points={
        "console_scripts": [
            "sdi-lab=threestudio_sdi.experimental.lab.cli:main",
            "sdi-bench=sdi_bench.cli:main",
            "sdi-lab3d=threestudio_sdi.experimental.lab3d.cli:main",
            "sdi-doctor=threestudio_sdi.doctor:main",
        ]
    },
)
