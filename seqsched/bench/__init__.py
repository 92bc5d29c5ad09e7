"""Side-by-side strategy runs, tables and plots (the metrics themselves: ``seqsched.metrics``)."""
