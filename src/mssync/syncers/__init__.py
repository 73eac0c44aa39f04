"""Phase 'syncers' (syncers.smk): the syncer model, the temporal pyramid, windows, training, metrics, evaluation."""
