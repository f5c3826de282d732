"""HTTP API: thin routers over the services; `build_app` is the only entry point."""
