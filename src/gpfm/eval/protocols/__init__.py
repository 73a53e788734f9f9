"""One module per task family; importing this package registers every protocol and task loader.

Each family module adds itself to the import list below with one line.
"""
from gpfm.eval.protocols import roi_classification  # noqa: F401  (roi.linear.*, roi.knn.*, roi_images loader)
from gpfm.eval.protocols import roi_fewshot  # noqa: F401  (roi.fewshot.simpleshot)
from gpfm.eval.protocols import roi_retrieval  # noqa: F401  (roi.retrieval.pathobench/thunder/gpfm)
from gpfm.eval.protocols import report_generation  # noqa: F401  (report.histgen, report_records loader)
from gpfm.eval.protocols import vqa  # noqa: F401  (vqa.fusion, vqa_records loader)
from gpfm.eval.protocols import wsi_mil  # noqa: F401  (wsi.abmil.gpfm/gated, wsi.transmil, wsi.meanpool/maxpool; slide_h5, survival_h5 loaders)
from gpfm.eval.protocols import survival  # noqa: F401  (surv.abmil_nll, surv.abmil_cox, surv.coxnet, surv.abmil_nll.gpfm-faithful)
