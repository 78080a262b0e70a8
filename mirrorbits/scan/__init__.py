"""Scanning: the local repository index and the mirrors' file lists (rsync, FTP, trace files)."""
