"""One module per task family; importing this package registers every protocol and task loader.

Each family module adds itself to the import list below with one line.
"""
from gpfm.eval.protocols import (
    report_generation,  # noqa: F401  (report.histgen, report_records loader)
    roi_classification,  # noqa: F401  (roi.linear.*, roi.knn.*, roi_images loader)
    roi_fewshot,  # noqa: F401  (roi.fewshot.simpleshot)
    roi_retrieval,  # noqa: F401  (roi.retrieval.pathobench/thunder/gpfm)
    survival,  # noqa: F401  (surv.abmil_nll, surv.abmil_cox, surv.coxnet, surv.abmil_nll.gpfm-faithful)
    vqa,  # noqa: F401  (vqa.fusion, vqa_records loader)
    wsi_mil,  # noqa: F401  (wsi.abmil.gpfm/gated, wsi.transmil, wsi.meanpool/maxpool; slide_h5, survival_h5 loaders)
)
