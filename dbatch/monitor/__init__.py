"""Everything that watches a run: results, progress bars and widgets, the dashboard page."""
