"""The web console at `/ui`: pages served by this server, which call its public API as the
signed-in key (see `docs/console.md`)."""
