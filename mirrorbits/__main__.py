"""``python -m mirrorbits``: the ``mirrorbits`` console script."""

from mirrorbits.console import entry_point

if __name__ == "__main__":
    entry_point()
