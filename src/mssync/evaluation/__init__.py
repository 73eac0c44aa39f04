"""Phase 'evaluate' (evaluate.smk): the full evaluation, lips, plots, the report."""
