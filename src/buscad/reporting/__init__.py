"""Reports of evaluated runs: ``tables`` (Markdown/HTML), ``figures`` (matplotlib Agg), ``report``."""
