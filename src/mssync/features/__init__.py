"""Phase 'features' (features.smk): per-clip features, the Parquet contract, the dataset splits, previews."""
