"""Download description formats built from the index: Metalink 4 and 3 documents, and the
RFC 3230 / RFC 9530 digest headers.

Why a package of its own: these are pure text formats (no reactor, no Redis, no request), so the
web layer and the tests build them from a file record and a list of mirror URLs alone.
"""
