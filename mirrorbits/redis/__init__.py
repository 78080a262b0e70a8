"""Redis data layer: key names and encodings, connections, the embedded server, schema upgrades."""
