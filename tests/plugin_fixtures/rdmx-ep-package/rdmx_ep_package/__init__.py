"""The entry point names this package, but the hooks live in rdmx_ep_package.plugin."""
