"""Serving: the shells that answer other programs over HTTP (the reward model today; the guarded
policy next). Like the CLI and the web app, they call into stages and cross-cutting modules, never
the reverse."""
