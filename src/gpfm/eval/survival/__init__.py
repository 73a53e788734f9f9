"""Survival building blocks: discrete-time NLL and time bins, Cox loss, CoxNet, Kaplan–Meier and log-rank."""

from gpfm.eval.survival.cox import cox_ph_loss
from gpfm.eval.survival.coxnet import CoxnetModel, fit_coxnet
from gpfm.eval.survival.km import kaplan_meier, km_curves, logrank_test, risk_groups
from gpfm.eval.survival.nll import NLLSurvLoss, TimeBins, quantile_bins, risk_from_logits

__all__ = [
    "CoxnetModel",
    "NLLSurvLoss",
    "TimeBins",
    "cox_ph_loss",
    "fit_coxnet",
    "kaplan_meier",
    "km_curves",
    "logrank_test",
    "quantile_bins",
    "risk_from_logits",
    "risk_groups",
]
