"""The paper's tables and figures, as pure functions of the tidy runs table.

``source`` (what a ``table``/``plot`` command reads), ``statistics`` (per-run rows, seed means and
standard deviations), one module per table kind (``base2new``, ``ablation``, ``transfer``,
``few_shot``, ``search``), ``published`` (the paper's numbers and our differences), ``labels``
(display names and order), ``display`` (formatted cells), ``render`` (Markdown, LaTeX, CSV),
``tables`` (the table-kind registry: which tables the runs support) and ``plots`` (PNG figures).
"""
