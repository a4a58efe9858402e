"""``genoseg train`` command (light module: torch is imported inside the command)."""

from __future__ import annotations

import sys

import click


@click.command("train")
@click.option(
    "-c",
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    required=True,
    help="Training config YAML (see configs/train.yaml).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set optim.lr=1e-3 (repeatable).",
)
@click.option("--resume", is_flag=True, help="Continue from OUT_DIR/last.pt.")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N (overrides the config).")
@click.option("--threads", type=int, default=None, help="torch CPU threads (0 = default).")
@click.option("--seed", type=int, default=None, help="Random seed (overrides the config).")
@click.option("-o", "--out-dir", default=None, help="Output folder (overrides out_dir).")
def train_command(config, overrides, resume, device, threads, seed, out_dir):
    """Train a gene model from prepared HDF5 windows (CNN encoder + exact semi-CRF)."""
    from genoseg.train.config import load_train_config
    from genoseg.train.train import train

    extra = list(overrides)
    for key, val in (("device", device), ("threads", threads), ("seed", seed),
                     ("out_dir", out_dir)):  # fmt: skip
        if val is not None:
            extra.append(f"{key}={val}")
    cfg = load_train_config(config, extra)
    status = train(cfg, resume=resume)
    if status:
        sys.exit(status)
