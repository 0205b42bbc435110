"""The ImageNet-C corruptions as batched torch functions (CPU and GPU), with their severity tables.

``corrupt(images, name, severity, generator=None)`` is the one entry point; ``CORRUPTIONS`` lists the 19 names
(``STANDARD_CORRUPTIONS``, the 15 of ImageNet-C, then ``EXTRA_CORRUPTIONS``, its 4 held-out ones) and
``SEVERITY_TABLES`` their parameters.
"""

from __future__ import annotations

from robustbench_rpc.corruptions.api import (
    CORRUPTION_GROUPS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    STANDARD_CORRUPTIONS,
    check_corruption_name,
    check_severity,
    corrupt,
)
from robustbench_rpc.corruptions.digital import jpeg_roundtrip
from robustbench_rpc.corruptions.severity import SEVERITIES, SEVERITY_TABLES, severity_params

__all__ = [
    "CORRUPTIONS",
    "CORRUPTION_GROUPS",
    "EXTRA_CORRUPTIONS",
    "SEVERITIES",
    "SEVERITY_TABLES",
    "STANDARD_CORRUPTIONS",
    "check_corruption_name",
    "check_severity",
    "corrupt",
    "jpeg_roundtrip",
    "severity_params",
]
