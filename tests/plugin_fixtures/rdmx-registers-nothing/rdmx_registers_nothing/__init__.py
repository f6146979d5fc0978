"""rdmx test fixture plugin."""
