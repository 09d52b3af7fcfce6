"""HTML reports: self-contained pages (charts and their data inline, no network)."""
