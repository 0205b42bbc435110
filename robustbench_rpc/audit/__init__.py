"""The audit: attack-failure checks beside every robust accuracy (see :mod:`robustbench_rpc.audit.run`)."""

from robustbench_rpc.audit.checks import CHECK_LIST, CHECKS, CheckResult, parse_checks, parse_thresholds
from robustbench_rpc.audit.run import AuditSettings, AuditSummary, audit

__all__ = [
    "CHECKS",
    "CHECK_LIST",
    "AuditSettings",
    "AuditSummary",
    "CheckResult",
    "audit",
    "parse_checks",
    "parse_thresholds",
]
