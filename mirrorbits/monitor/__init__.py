"""Background monitor: health checks, scan scheduling and the cluster split."""
