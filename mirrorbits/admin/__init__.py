"""Administration: one set of commands behind the CLI, the admin channel and the SSH manhole."""
