"""mirrorbits for Python: a geographical download redirector on Twisted.

A drop-in replacement for the Go Mirrorbits (same config, same Redis data, same HTTP and CLI behaviour).
"""

__version__ = "0.1.0"

#: What the Go original calls its version: shown in ``Server: Mirrorbits/<version>`` and the banner.
VERSION = __version__
