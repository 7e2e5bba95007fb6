"""The plugin contract: hook specifications, the spec records a plugin hands over, declared parameters,
the registry that loads built-ins and third-party plugins through one entry-point group, the core's own
registrations, and the plugin API version with what it refuses. The conformance check a plugin author runs
drives the whole runner, so it stands above it: :mod:`fedbench.testing`."""
