"""Looking inside attention: the KPCA reconstruction error, what PAP does per iteration, and how the values align
with the eigenvectors of the key kernel matrix, clean and corrupted (``robustbench-rpc diagnose``).

``reconstruction_error(model, pixels)`` gives one value per attention layer; ``find_attention(model)`` lists the
layers the diagnostics can read; ``diagnose(model, checkpoint, out=...)`` stores the per-layer / per-head records
of clean and corrupted images as two cells, and ``diagnostics_frame(dirs)`` reads them back.
"""

from __future__ import annotations

from robustbench_rpc.diagnostics.probes import AttentionProbe, find_attention
from robustbench_rpc.diagnostics.reconstruction import reconstruction_error
from robustbench_rpc.diagnostics.run import DiagnoseSummary, diagnose, diagnostics_frame

__all__ = ["AttentionProbe", "DiagnoseSummary", "diagnose", "diagnostics_frame", "find_attention",
           "reconstruction_error"]
