"""The HTTP side: request dispatch, client identity, renderers, statistics and the download log."""
