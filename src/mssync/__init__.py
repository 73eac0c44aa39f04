"""mssync: a reproducible MS-Sync pipeline (Airale et al., arXiv 2307.03270)."""

__version__ = "0.1.0"
