"""``gpfm pretrain`` (UNKD pretraining) and ``gpfm pretrain-export`` (EMA teacher → GPFM-format encoder).

Both are thin wrappers over :func:`gpfm.pretrain.train.train` (which creates and destroys the torchrun
process group itself) and :func:`gpfm.pretrain.export.export_checkpoint`.
Multi-process runs go through torchrun: ``torchrun --nproc_per_node 8 -m gpfm pretrain --config FILE``.
"""

from __future__ import annotations

from pathlib import Path

import typer


def pretrain(
    overrides: list[str] = typer.Argument(
        None, help="key=value overrides, e.g. optim.base_lr=1e-3 distill.experts.1.cls_weight=0"
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML config (may start with 'preset: NAME')."
    ),
    preset: str | None = typer.Option(
        None, "--preset", help="Start from a named preset: gpfm_vitl14, tiny_cpu."
    ),
    no_resume: bool = typer.Option(
        False, "--no-resume", help="Start fresh even if the run folder has checkpoints."
    ),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
    allow_config_change: bool = typer.Option(
        False, "--allow-config-change",
        help="Resume although weight-shaping settings changed (recorded in config_history.jsonl)."),
) -> None:
    """Pretrain a student ViT with DINO + iBOT + KoLeo and online expert distillation (auto-resumes)."""
    from gpfm.pretrain.config import ConfigError, dump_yaml, load_config

    try:
        cfg = load_config(config, overrides or [], preset=preset)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    if print_config:
        typer.echo(dump_yaml(cfg))
        return
    from gpfm.errors import EXIT_INPUT, GpfmError
    from gpfm.pretrain.train import train

    try:  # errors (diverged: exit 5; changed config / unreadable checkpoints: exit 2) go to the CLI boundary
        result = train(cfg, resume=not no_resume, allow_config_change=allow_config_change)
    except ValueError as exc:
        if isinstance(exc, GpfmError):
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=EXIT_INPUT) from None
    typer.echo(
        f"done: {result.iterations} iterations in {result.run_dir}; last checkpoint {result.checkpoint}"
    )


def pretrain_export(
    checkpoint: Path = typer.Argument(..., help="A checkpoint_<iteration>.pt written by gpfm pretrain."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Export folder (teacher_checkpoint.pth, model.safetensors, config.json)."
    ),
) -> None:
    """Export the EMA teacher of a training checkpoint as a GPFM-format encoder (formats A and B)."""
    from gpfm.pretrain.export import export_checkpoint

    try:
        folder = export_checkpoint(checkpoint, out)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(
        f"exported {checkpoint} -> {folder} (load with gpfm.pretrain.export.load_exported_encoder; "
        "a ViT-L/14 also with create_encoder('gpfm', weights=...))"
    )


def register(app: typer.Typer) -> None:
    """Mount the commands on the main app."""
    app.command("pretrain")(pretrain)
    app.command("pretrain-export")(pretrain_export)
