"""Phase 'data' (workflow/rules/data.smk): the manifest, download, crop."""
