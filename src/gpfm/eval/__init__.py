"""Evaluation: feature caches, protocols per task family, metrics, the suite runner and reports."""

from gpfm.eval.protocol import (
    PROTOCOLS,
    TASK_LOADERS,
    Protocol,
    ProtocolResult,
    TaskContext,
    create_protocol,
    register_protocol,
    register_task_loader,
)

__all__ = [
    "PROTOCOLS",
    "TASK_LOADERS",
    "Protocol",
    "ProtocolResult",
    "TaskContext",
    "create_protocol",
    "register_protocol",
    "register_task_loader",
]
