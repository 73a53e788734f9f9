"""Models of the multimodal task families on frozen features: report generation and VQA."""

from gpfm.eval.multimodal.data import ReportTaskData, VqaTaskData, assign_splits, ensure_val_split
from gpfm.eval.multimodal.report_model import Generation, ReportGenerator, ReportModelConfig
from gpfm.eval.multimodal.training import FitResult, TrainConfig, fit
from gpfm.eval.multimodal.vqa_model import VqaFusionModel, VqaModelConfig

__all__ = [
    "FitResult",
    "Generation",
    "ReportGenerator",
    "ReportModelConfig",
    "ReportTaskData",
    "TrainConfig",
    "VqaFusionModel",
    "VqaModelConfig",
    "VqaTaskData",
    "assign_splits",
    "ensure_val_split",
    "fit",
]
