"""``python -m mirrorbits.worker``: one HTTP worker process, spawned by the main daemon process.

A separate entry point (not a word of the ``mirrorbits`` command, whose words are Go's) so that the
process list says what each process is.
"""

import sys

from mirrorbits.lifecycle.daemon import run_worker

if __name__ == "__main__":
    sys.exit(run_worker(sys.argv[1:]))
