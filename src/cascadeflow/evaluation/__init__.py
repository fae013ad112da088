"""Offline evaluation of cascades: metrics on replayed outcomes, threshold fitting, and reports."""

from .metrics import (
    GOOD,
    POOLED,
    Outcome,
    accepted_wrong_rate,
    apgr,
    apply_threshold,
    auroc,
    bootstrap_ci,
    cascade_cost,
    cascade_quality,
    choose_threshold,
    compute_curves,
    cost_quality_curve,
    cv_folds,
    deferral_curve,
    escalation_order,
    escalation_rate,
    false_accept_rate,
    fit_combined,
    fit_logistic,
    fit_threshold,
    group_by_dataset,
    logistic_confidence,
    oracle_curve,
    quality_retained,
    random_curve,
    rescore,
    saving,
    summarize,
    summarize_by_dataset,
)
from .report import render_html, render_markdown, render_table, svg_chart

__all__ = [
    "GOOD", "POOLED", "Outcome", "accepted_wrong_rate", "apgr", "apply_threshold", "auroc", "bootstrap_ci",
    "cascade_cost", "cascade_quality", "choose_threshold", "compute_curves", "cost_quality_curve", "cv_folds",
    "deferral_curve", "escalation_order", "escalation_rate", "false_accept_rate", "fit_combined", "fit_logistic",
    "fit_threshold", "group_by_dataset", "logistic_confidence", "oracle_curve", "quality_retained", "random_curve",
    "render_html", "render_markdown", "render_table", "rescore", "saving", "summarize", "summarize_by_dataset",
    "svg_chart",
]  # fmt: skip
