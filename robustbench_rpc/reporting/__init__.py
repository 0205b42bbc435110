"""Presentation of results: views, exports, plots, the comparison display and the report.

Every function takes a tidy table (:func:`robustbench_rpc.results.tidy.tidy`) or a comparison frame
(:func:`robustbench_rpc.results.compare.compare`) and returns a frame, a figure or text, or writes output files;
none opens a results directory (that is :mod:`robustbench_rpc.results`' job, and the callers': the CLI,
:mod:`robustbench_rpc.reports`, the demo). reporting imports nothing of results, engine, api or cli.
"""
