"""A port of Go's ``text/tabwriter`` (elastic tabstops), for byte-exact ``list``/``export``/``stats``.

The Go CLI writes its tables through ``tabwriter.NewWriter(os.Stdout, 0, 8, 0, '\\t', 0)``; scripts
parse those bytes (TABs included), so the algorithm is ported as is:

* a cell is text terminated by a TAB (or ``\\v``); the text after the last TAB of a line is not part of
  any column;
* a column block is a run of consecutive lines that have a cell in that column; its width is the widest
  cell (in code points) plus ``padding``;
* with TAB padding the width is rounded up to a multiple of ``tabwidth`` and each cell is followed by
  ``ceil((width - cellwidth) / tabwidth)`` TABs.

Faithful quirk, kept on purpose: with ``padding=0`` a cell whose width is exactly the (multiple-of-8)
column width gets *no* TAB and runs into the next cell (``mirror3-renamed down/up``). Fixing it changes the
bytes scripts parse, so callers opt in: the fix is ``padding=1`` (always at least one TAB), which is
what Go itself does with a non-zero padding.

Only the behaviour reachable with TAB padding and no flags is ported (no AlignRight, no escapes, no HTML
filtering, no Debug bars); ``\\f`` forces a block break as in Go.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TabWriter", "tabulate"]


@dataclass
class _Cell:
    text: str = ""
    htab: bool = False  # terminated by a real TAB (not \v)

    @property
    def width(self) -> int:
        return len(self.text)


class TabWriter:
    """Accumulate text with :meth:`write`; :meth:`flush` returns the formatted output.

    Mirrors Go's ``Writer`` with ``padchar='\\t'`` and ``flags=0``.
    """

    def __init__(self, minwidth: int = 0, tabwidth: int = 8, padding: int = 0) -> None:
        if minwidth < 0 or tabwidth < 0 or padding < 0:
            raise ValueError("negative minwidth, tabwidth or padding")
        self.minwidth = minwidth
        self.tabwidth = tabwidth
        self.padding = padding
        self._out: list[str] = []
        self._reset()

    def _reset(self) -> None:
        self._cell = _Cell()
        self._lines: list[list[_Cell]] = [[]]
        self._widths: list[int] = []

    def write(self, text: str) -> None:
        """Append text; cells end at TAB/\\v, lines at \\n/\\f (a \\f also ends every column block)."""
        start = 0
        for i, ch in enumerate(text):
            if ch in "\t\v\n\f":
                self._cell.text += text[start:i]
                start = i + 1
                ncells = self._terminate_cell(ch == "\t")
                if ch in "\n\f":
                    self._lines.append([])
                    if ch == "\f" or ncells == 1:
                        # Go flushes here: a one-cell line cannot affect the following lines.
                        self._flush_no_reset_output()
        self._cell.text += text[start:]

    def _terminate_cell(self, htab: bool) -> int:
        self._cell.htab = htab
        line = self._lines[-1]
        line.append(self._cell)
        self._cell = _Cell()
        return len(line)

    def flush(self) -> str:
        """Format everything buffered and return all output produced since the last flush."""
        self._flush_no_reset_output()
        out = "".join(self._out)
        self._out = []
        return out

    def _flush_no_reset_output(self) -> None:
        if self._cell.text:
            self._terminate_cell(False)
        self._format(0, len(self._lines))
        # The current (last) line's pending text has already been emitted by _write_lines.
        self._lines = [[]]
        self._cell = _Cell()
        self._widths = []

    def _format(self, line0: int, line1: int) -> None:
        column = len(self._widths)
        this = line0
        while this < line1:
            line = self._lines[this]
            if column >= len(line) - 1:
                this += 1
                continue
            # This line has a cell in this column: print the lines above it, then the block.
            self._write_lines(line0, this)
            line0 = this
            width = self.minwidth
            while this < line1:
                line = self._lines[this]
                if column >= len(line) - 1:
                    break
                w = line[column].width + self.padding
                if w > width:
                    width = w
                this += 1
            self._widths.append(width)
            self._format(line0, this)
            self._widths.pop()
            line0 = this
        self._write_lines(line0, line1)

    def _write_lines(self, line0: int, line1: int) -> None:
        for i in range(line0, line1):
            line = self._lines[i]
            for j, c in enumerate(line):
                if c.text:
                    self._out.append(c.text)
                if j < len(self._widths):
                    self._write_padding(c.width, self._widths[j])
            if i + 1 == len(self._lines):
                # Last buffered line: no newline yet, write the pending cell text.
                self._out.append(self._cell.text)
                self._cell = _Cell()
            else:
                self._out.append("\n")

    def _write_padding(self, textw: int, cellw: int) -> None:
        if self.tabwidth == 0:
            return
        cellw = (cellw + self.tabwidth - 1) // self.tabwidth * self.tabwidth
        n = cellw - textw
        if n < 0:  # pragma: no cover - impossible by construction, as in Go
            raise AssertionError("tabwriter: internal error")
        self._out.append("\t" * ((n + self.tabwidth - 1) // self.tabwidth))


def tabulate(text: str, padding: int = 0) -> str:
    """Format a whole text through a Go-configured tab writer (minwidth 0, tabwidth 8, TAB padding)."""
    w = TabWriter(0, 8, padding)
    w.write(text)
    return w.flush()
