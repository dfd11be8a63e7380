"""A stand-in for threestudio's ``launch.py`` — NOT threestudio — for ``sdi-bench`` tests and docs.

    sdi-bench run --threestudio tests/bench_standin ...

It parses the same command line as threestudio's ``launch.py`` (``--config``, ``--gpu``, ``--train``
and ``key=value`` overrides merged with OmegaConf), reads the prompt as threestudio's prompt processor
does (three resolutions: ``load_config``, ``parse_structured``, ``cfg.prompt``) and writes it to
``standin-prompt.txt`` in the trial folder, and writes threestudio's output layout under
``<exp_root_dir>/<name>/<tag>[@timestamp]/``: ``configs/parsed.yaml``, ``ckpts/last.ckpt`` and
``save/it<max_steps>-test/<i>.png`` (render | normal | opacity panels, ``standin.size`` pixels each,
``standin.test_views`` views). Without CUDA it trains nothing real: the renders are a disc whose colour
depends on the prompt and whose size depends on the seed.

Knobs (config keys, e.g. as method overrides or ``--set``):

* ``standin.lightning=true``: train and test with a real ``pytorch_lightning.Trainer`` (a tiny module
  whose ``forward`` returns ``comp_rgb`` and ``opacity``), so the benchmark's injected callback
  measures it; otherwise a plain loop (fast: no torch import).
* ``standin.fault=``: ``fail`` (raise), ``fail-first`` (raise on attempt 1 only), ``oom`` (raise
  torch's CUDA out-of-memory message), ``crash`` (exit at once, no Python exception), and with
  ``standin.lightning=true`` also ``nan`` (the loss becomes NaN) and ``empty`` (zero opacity).
* ``standin.step_seconds=``: sleep per training step (plain loop), to make a run take a while.
* ``standin.child=true``: start a child process that sleeps (as threestudio's prompt processor and data
  loaders start theirs) and write its pid to ``standin-child.pid`` in the working directory.

Environment (set by tests): ``SDI_BENCH_STANDIN_LEDGER=FILE`` appends ``start``/``end`` lines per run
(``<event> <run id> <attempt> <time>``), and an ``overlap`` line when a training of another attempt of
the same run is still alive as this one starts (read from their ``training.json``);
``SDI_BENCH_STANDIN_BARRIER=DIR:N`` makes each run wait until N runs have started (across processes);
``SDI_BENCH_STANDIN_HOLD=FILE`` makes each run wait after its start until FILE exists.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import time
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

RESOLVERS = {
    "rmspace": lambda text, sub: text.replace(" ", sub),
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
}


def load_config(path: str, overrides: list[str]):
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            with warnings.catch_warnings():  # omegaconf 2.4 renames it; 2.3 (threestudio's pin) has only this
                warnings.simplefilter("ignore")
                OmegaConf.register_new_resolver(name, resolver)
    cfg = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_cli(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def ledger(event: str) -> None:
    path = os.environ.get("SDI_BENCH_STANDIN_LEDGER")
    if path:
        run = os.environ.get("SDI_BENCH_RUN_ID", "?")
        line = f"{event} {run} {os.environ.get('SDI_BENCH_ATTEMPT', '?')} {time.time():.6f}\n"
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line.encode())
        finally:
            os.close(descriptor)


@dataclass
class PromptProcessorConfig:
    """The prompt of threestudio's prompt processor config (``PromptProcessor.Config``)."""

    prompt: str = "a hamburger"


def trained_prompt(cfg) -> str:
    """The prompt as threestudio's prompt processor reads it: its block parsed into its ``Config``
    (``parse_structured``: ``Config(**cfg)``, then ``OmegaConf.structured``), then ``self.cfg.prompt``."""
    block = cfg.system.prompt_processor
    return OmegaConf.structured(PromptProcessorConfig(prompt=block["prompt"])).prompt


def other_attempts_alive() -> bool:
    """Whether a training process of another attempt of this run (``../attempt-*``) is alive."""
    from sdi_bench.ownership import TRAINING, ProcessId, read_json

    here = pathlib.Path.cwd().resolve()
    for record in here.parent.glob(f"attempt-*/{TRAINING}"):
        process = ProcessId.from_dict(read_json(record))
        if record.parent != here and process is not None and process.alive():
            return True
    return False


def barrier() -> None:
    spec = os.environ.get("SDI_BENCH_STANDIN_BARRIER")
    if not spec:
        return
    folder, _, count = spec.rpartition(":")
    folder_path = pathlib.Path(folder)
    folder_path.mkdir(parents=True, exist_ok=True)
    (folder_path / f"{os.getpid()}").write_text(os.environ.get("SDI_BENCH_RUN_ID", "?"))
    deadline = time.monotonic() + 120
    while len(list(folder_path.iterdir())) < int(count):
        if time.monotonic() > deadline:
            raise RuntimeError(f"stand-in barrier: fewer than {count} runs started within 120 s")
        time.sleep(0.05)


def disc(
    name: str, prompt: str, seed: int, view: int, size: int, empty: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(rgb [size, size, 3] in [0, 1], opacity [size, size]) of one test view: the colour follows the
    prompt, the size the config's name and the seed."""
    hue = zlib.crc32(prompt.encode()) % 360 / 360.0
    colour = 0.5 + 0.5 * np.cos(2 * np.pi * (hue + np.array([0.0, 1 / 3, 2 / 3])))
    radius = size * (0.15 + 0.05 * ((zlib.crc32(name.encode()) + seed) % 5))
    angle = 2 * np.pi * view / 120.0
    centre = size / 2 + 0.15 * size * np.array([np.cos(angle), np.sin(angle)])
    ys, xs = np.mgrid[0:size, 0:size]
    inside = ((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius**2) & (not empty)
    opacity = inside.astype(np.float64)
    rgb = opacity[..., None] * colour + (1 - opacity[..., None]) * 1.0
    return rgb, opacity


def save_panels(path: pathlib.Path, rgb: np.ndarray, opacity: np.ndarray) -> None:
    """threestudio's test image: render | normal | opacity side by side."""
    normal = np.stack([opacity * 0.5 + 0.25] * 3, axis=-1)
    panels = np.concatenate([rgb, normal, np.stack([opacity] * 3, axis=-1)], axis=1)
    Image.fromarray((np.clip(panels, 0, 1) * 255).round().astype(np.uint8)).save(path)


def train_plain(cfg, prompt: str, save_dir: pathlib.Path, step: int, size: int, views: int) -> None:
    seconds = float(cfg.standin.get("step_seconds", 0.0))
    for _ in range(step):
        if seconds:
            time.sleep(seconds)
    name, seed = str(cfg.name), int(cfg.seed)
    folder = save_dir / f"it{step}-test"
    folder.mkdir(parents=True, exist_ok=True)
    for view in range(views):
        save_panels(folder / f"{view}.png", *disc(name, prompt, seed, view, size, empty=False))


def train_lightning(
    cfg, prompt: str, save_dir: pathlib.Path, step: int, size: int, views: int, fault: str | None
) -> None:
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning import Trainer  # what launch.py does: the benchmark's hook patches this name
    from torch.utils.data import DataLoader

    name, seed = str(cfg.name), int(cfg.seed)
    pl.seed_everything(seed)

    class System(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.colour = torch.nn.Parameter(torch.zeros(3))

        def forward(self, batch):
            view = int(batch["index"][0])
            rgb, opacity = disc(name, prompt, seed, view, size, empty=fault == "empty")
            rgb_t = torch.as_tensor(rgb, dtype=torch.float32)[None] * torch.sigmoid(self.colour) * 2
            return {
                "comp_rgb": rgb_t,
                "opacity": torch.as_tensor(opacity, dtype=torch.float32)[None, ..., None],
            }

        def training_step(self, batch, batch_idx):
            loss = ((torch.sigmoid(self.colour) - 0.5) ** 2).sum()
            if fault == "nan" and batch_idx >= 1:
                loss = loss * float("nan")
            return {"loss": loss}

        def test_step(self, batch, batch_idx):
            out = self(batch)
            folder = save_dir / f"it{step}-test"
            folder.mkdir(parents=True, exist_ok=True)
            rgb = out["comp_rgb"][0].clamp(0, 1).detach().numpy()
            save_panels(folder / f"{int(batch['index'][0])}.png", rgb, out["opacity"][0, ..., 0].numpy())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def loader(count: int) -> DataLoader:
        return DataLoader([{"index": index} for index in range(count)], batch_size=1)

    trainer = Trainer(
        max_steps=step,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    system = System()
    trainer.fit(system, train_dataloaders=loader(step))
    trainer.test(system, dataloaders=loader(views))


def main() -> int:
    parser = argparse.ArgumentParser(description="stand-in for threestudio's launch.py (see its docstring)")
    parser.add_argument("--config", required=True)
    parser.add_argument("--gpu", default="0")
    group = parser.add_mutually_exclusive_group(required=True)
    for mode in ("--train", "--validate", "--test", "--export"):
        group.add_argument(mode, action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args, extras = parser.parse_known_args()
    if not args.train:
        raise SystemExit("the stand-in implements --train only")
    cfg = load_config(args.config, extras)
    standin = cfg.get("standin") or OmegaConf.create({})
    cfg.standin = standin
    stamp = time.strftime("@%Y%m%d-%H%M%S") if cfg.get("use_timestamp", True) else ""
    trial_dir = pathlib.Path(cfg.get("exp_root_dir", "outputs")) / str(cfg.name) / f"{cfg.tag}{stamp}"
    size = int(standin.get("size", cfg.data.get("eval_width", 32)))
    views = int(standin.get("test_views", cfg.data.get("n_test_views", 120)))
    cfg.data.eval_width = cfg.data.eval_height = size
    cfg.data.n_test_views = views
    prompt = trained_prompt(cfg)

    ledger("start")
    if os.environ.get("SDI_BENCH_STANDIN_LEDGER") and other_attempts_alive():
        ledger("overlap")
    barrier()
    if standin.get("child", False):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        pathlib.Path("standin-child.pid").write_text(str(child.pid))
    hold = os.environ.get("SDI_BENCH_STANDIN_HOLD")
    while hold and not os.path.exists(hold):
        time.sleep(0.05)
    fault = standin.get("fault")
    attempt = os.environ.get("SDI_BENCH_ATTEMPT", "1")
    print(f"stand-in: {cfg.name} / {prompt!r} / seed {cfg.seed} -> {trial_dir}", flush=True)
    if fault == "fail" or (fault == "fail-first" and attempt == "1"):
        raise RuntimeError(f"stand-in told to fail (standin.fault={fault}, attempt {attempt})")
    if fault == "oom":
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (stand-in: standin.fault=oom)")
    if fault == "crash":
        os._exit(3)
    (trial_dir / "configs").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, trial_dir / "configs" / "parsed.yaml")
    (trial_dir / "standin-prompt.txt").write_text(prompt, encoding="utf-8")
    step = int(cfg.trainer.max_steps)
    if standin.get("lightning", False):
        train_lightning(cfg, prompt, trial_dir / "save", step, size, views, fault)
    else:
        train_plain(cfg, prompt, trial_dir / "save", step, size, views)
    (trial_dir / "ckpts").mkdir(parents=True, exist_ok=True)
    (trial_dir / "ckpts" / "last.ckpt").write_bytes(b"stand-in checkpoint\n")
    ledger("end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
