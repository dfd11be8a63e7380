"""Train configs/sdi.yaml for 3 steps inside a real threestudio checkout, on the CPU (test harness).

    python tests/threestudio_cpu/run_smoke.py --threestudio-root /path/to/threestudio --workdir /tmp/x

What it does, in a fresh working directory (threestudio's tree is never written to):

1. ``custom/threestudio-sdi`` there links to this repository's drop-in folder and ``load`` to the
   checkout's ``load/`` (the prompt processor reads ``load/prompt_library.json``);
2. imports the real threestudio (55 built-ins, the built-in SDI among them) with the CPU stand-ins and
   patches of :mod:`threestudio_sdi.cpu_harness`, then calls launch.py's own ``load_custom_modules()``;
3. resolves ``sdi-guidance`` and ``sdi-ext-system`` (and the built-in SDI names) with ``threestudio.find``;
4. parses configs/sdi.yaml with threestudio's ``load_config`` plus two override files written here
   (tiny offline Stable Diffusion, pure-torch geometry, importance sampling, solid-colour
   background, 32×32 renders, precision 32, 3 steps), and checks the built-in SDS / VSD blocks of
   configs/sds.yaml and configs/vsd.yaml against threestudio's own Config classes;
5. trains 3 steps, validates once, tests once (a Lightning ``Trainer`` on the CPU, as launch.py
   would build it on a GPU), and writes a JSON report: losses, whether the geometry changed, files.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
import warnings

sys.dont_write_bytecode = True  # never write __pycache__ into the threestudio checkout

from threestudio_sdi.cpu_harness import import_threestudio, load_launch, patches, prepare_workdir  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]

CPU_RESET = """
system:
  background: null
  geometry:
    pos_encoding_config: null
    mlp_network_config: null
"""
# Keys of the sdi.yaml blocks that name a CUDA-only component are cleared above (an OmegaConf merge
# keeps old keys, and threestudio's configs reject unknown ones), then set anew here.
CPU_OVERRIDES = """
data:
  width: 32
  height: 32
  eval_width: 32
  eval_height: 32
  n_val_views: 1
  n_test_views: 1
system:
  geometry:
    pos_encoding_config:
      otype: ProgressiveBandFrequency
      n_frequencies: 4
    mlp_network_config:
      otype: VanillaMLP
      activation: ReLU
      output_activation: none
      n_neurons: 16
      n_hidden_layers: 1
  background_type: solid-color-background
  background:
    learned: true
  renderer:
    estimator: importance
    num_samples_per_ray: 16
    num_samples_per_ray_importance: 8
    near_plane: 0.1
    far_plane: 4.0
  prompt_processor:
    prompt: a DSLR photo of a hamburger
    spawn: false
  guidance:
    half_precision_weights: false
    local_files_only: true
    seed: 0
trainer:
  max_steps: 3
  val_check_interval: 3
  log_every_n_steps: 1
  enable_progress_bar: false
  precision: 32
"""


def check_builtin_configs(threestudio, load_config) -> dict:
    """configs/sds.yaml and configs/vsd.yaml parse with the real loader; their blocks fit the built-ins."""
    from threestudio.utils.config import parse_structured

    checked = {}
    for name in ("sds.yaml", "vsd.yaml"):
        cfg = load_config(
            str(REPO / "configs" / name), cli_args=["system.prompt_processor.prompt=x"], n_gpus=1
        )
        system_class = threestudio.find(cfg.system_type)
        system_cfg = parse_structured(system_class.Config, cfg.system)
        for kind in ("geometry", "material", "background", "renderer", "guidance", "prompt_processor"):
            component = threestudio.find(system_cfg[f"{kind}_type"])
            parse_structured(component.Config, system_cfg[kind])
        threestudio.find(cfg.data_type)  # the datamodule's keys are checked when it is built
        checked[name] = [cfg.system_type, system_cfg.guidance_type]
    return checked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threestudio-root", required=True, type=pathlib.Path)
    parser.add_argument("--workdir", required=True, type=pathlib.Path)
    parser.add_argument("--report", type=pathlib.Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    root = args.threestudio_root.resolve()
    workdir = args.workdir.resolve()
    prepare_workdir(workdir, root)
    os.chdir(workdir)
    warnings.filterwarnings("ignore")

    threestudio = import_threestudio(root)
    patched = patches.apply()
    builtin_count = len(threestudio.__modules__)

    launch = load_launch(root)
    launch.load_custom_modules()  # threestudio's own loader: executes custom/threestudio-sdi/__init__.py
    if "threestudio-sdi" not in sys.modules:
        raise RuntimeError("launch.load_custom_modules() did not load custom/threestudio-sdi")
    import threestudio_sdi.threestudio as plugin

    names = {
        name: f"{cls.__module__}.{cls.__qualname__}"
        for name in ("sdi-guidance", "sdi-ext-system", "stable-diffusion-sdi-guidance", "sdi-system")
        for cls in [threestudio.find(name)]
    }
    assert threestudio.find("sdi-guidance") is plugin.SDIGuidance
    assert threestudio.find("sdi-ext-system") is plugin.SDIExtSystem

    from threestudio_sdi.models.tiny import tiny_stable_diffusion

    tiny = tiny_stable_diffusion(workdir / "tiny-sd")
    (workdir / "cpu-reset.yaml").write_text(CPU_RESET)
    (workdir / "cpu-overrides.yaml").write_text(CPU_OVERRIDES)

    import pytorch_lightning as pl
    import torch
    from threestudio.utils.config import load_config

    builtin_configs = check_builtin_configs(threestudio, load_config)
    cfg = load_config(
        str(REPO / "configs" / "sdi.yaml"),
        str(workdir / "cpu-reset.yaml"),
        str(workdir / "cpu-overrides.yaml"),
        cli_args=[
            f"system.prompt_processor.pretrained_model_name_or_path={tiny}",
            f"system.guidance.pretrained_model_name_or_path={tiny}",
        ],
        n_gpus=1,
    )
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = threestudio.find(cfg.data_type)(cfg.data)
    system = threestudio.find(cfg.system_type)(cfg.system, resumed=False)
    save_dir = pathlib.Path(cfg.trial_dir) / "save"
    system.set_save_dir(str(save_dir))
    before = {key: value.detach().clone() for key, value in system.geometry.state_dict().items()}

    class Record(pl.Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []
            self.logged: dict = {}

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.losses.append(float(outputs["loss"]))
            self.logged = {key: float(value) for key, value in trainer.callback_metrics.items()}

    record = Record()
    trainer = pl.Trainer(
        callbacks=[record],
        logger=False,
        enable_checkpointing=False,
        inference_mode=False,
        accelerator="cpu",
        devices=1,
        **cfg.trainer,
    )
    trainer.fit(system, datamodule=datamodule)
    trainer.test(system, datamodule=datamodule)

    after = system.geometry.state_dict()
    changed = sorted(key for key, value in before.items() if not torch.equal(value, after[key]))
    files = sorted(str(path.relative_to(save_dir)) for path in save_dir.rglob("*") if path.is_file())
    import cv2

    validation = cv2.imread(str(save_dir / f"it{system.true_global_step}-0.png"))
    report = {
        "threestudio_version": getattr(threestudio, "__version__", "?"),
        "builtin_modules": builtin_count,
        "registered": names,
        "patched": patched,
        "builtin_configs": builtin_configs,
        "global_step": int(system.true_global_step),
        "losses": record.losses,
        "logged": record.logged,
        "geometry_params": sorted(before),
        "geometry_params_changed": changed,
        "save_dir": str(save_dir),
        "files": files,
        "file_sizes": {name: (save_dir / name).stat().st_size for name in files},
        "validation_image_shape": None if validation is None else list(validation.shape),
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(report, indent=2)
    if args.report is not None:
        args.report.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
