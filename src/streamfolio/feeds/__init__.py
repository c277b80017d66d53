"""Market-data feeds: files and services that produce price ticks."""
