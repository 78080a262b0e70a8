"""Download statistics over time: retention of the dated ``STATS_*`` keys, their history, export."""
