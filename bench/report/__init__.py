"""Reports from run records alone: the main table, paired comparisons, figures and a README.

Only the cells of the study as it is now (``study.json``) enter the tables; records of an
earlier version of the study are listed as stale, never averaged. Cells are averaged over
seeds only when every other setting agrees (their ``protocol_id``). The report knows no
method: a method's own numbers reach it through the columns the method declares.

One module per job: :mod:`.frames` (records → frames, summaries over seeds), :mod:`.statistics`
(pairing by test index, paired differences, estimator gaps), :mod:`.formatting` (tables and
their legends), :mod:`.comparisons` (published values, a reference folder) and :mod:`.readme`
(writing the table files and the README).
"""

from .comparisons import published_comparison, reference_comparison
from .formatting import format_mean, latex_table, markdown_table, method_table, paired_table, posterior_table, spread_note
from .frames import KEYS, method_columns, ordered_frame, records_frame, summary_frame
from .readme import load_study_records, write_report, write_table
from .statistics import (
    AIS_COLUMN,
    ESTIMATOR_PAIRS,
    PAIRED,
    estimator_gaps,
    falls_below,
    missed_gap_target,
    paired_differences,
    uneven_gaps,
)

__all__ = [
    "AIS_COLUMN", "ESTIMATOR_PAIRS", "KEYS", "PAIRED", "estimator_gaps", "falls_below", "format_mean", "latex_table",
    "load_study_records", "markdown_table", "method_columns", "missed_gap_target", "method_table", "ordered_frame", "paired_differences",
    "paired_table", "posterior_table", "published_comparison", "records_frame", "reference_comparison",
    "spread_note", "summary_frame", "uneven_gaps", "write_report", "write_table",
]
