"""Go text/tabwriter semantics (minwidth 0, tabwidth 8, padding 0, TAB padding)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mirrorbits.admin.tabwriter import TabWriter, tabulate


def test_spec_list_example() -> None:
    text = (
        "Identifier \tSTATE\tSINCE\n"
        "mirror1 \tup \t(Tue, 14 Nov 2023 22:21:40 UTC)\n"
        "mirror3 \tup/down \t(Tue, 14 Nov 2023 22:13:20 UTC)\n"
        "localmirror \tdisabled \t(Mon, 01 Jan 0001 00:00:00 UTC)\n"
    )
    assert tabulate(text) == (
        "Identifier \tSTATE\t\tSINCE\n"
        "mirror1 \tup \t\t(Tue, 14 Nov 2023 22:21:40 UTC)\n"
        "mirror3 \tup/down \t(Tue, 14 Nov 2023 22:13:20 UTC)\n"
        "localmirror \tdisabled \t(Mon, 01 Jan 0001 00:00:00 UTC)\n"
    )


def test_no_tab_when_widest_cell_is_a_multiple_of_8() -> None:
    # Faithful Go quirk (observed): "mirror3-renamed " (16) and "down/up " (8) are exactly as wide as
    # their columns, so both run straight into the next cell.
    text = "Identifier \tSTATE\tSINCE\nmirror3-renamed \tdown/up \t(x)\n"
    assert tabulate(text) == "Identifier \tSTATE\tSINCE\nmirror3-renamed down/up (x)\n"


def test_padding_one_always_separates() -> None:
    text = "Identifier \tSTATE\tSINCE\nmirror3-renamed \tdown/up \t(x)\n"
    out = tabulate(text, padding=1)
    assert out == "Identifier \t\tSTATE\t\tSINCE\nmirror3-renamed \tdown/up \t(x)\n"


def test_stats_file_block() -> None:
    text = "/README:\t3\n/sub/file.iso:\t2\n\t\nTotal download requests: \t5\n"
    assert tabulate(text) == "/README:\t\t\t3\n/sub/file.iso:\t\t\t2\n\t\t\t\t\nTotal download requests: \t5\n"


def test_text_after_last_tab_is_not_a_column() -> None:
    assert tabulate("a\tvery long trailing text\nbb\tx\n") == "a\tvery long trailing text\nbb\tx\n"


def test_column_blocks_are_per_run_of_lines() -> None:
    # The one-cell middle line ends the first block: the second block has its own width.
    text = "a\tb\nno tabs here\nccccccccccc\td\n"
    assert tabulate(text) == "a\tb\nno tabs here\nccccccccccc\td\n"
    text = "a\tb\nccccccccccc\td\n"
    assert tabulate(text) == "a\t\tb\nccccccccccc\td\n"


def test_nested_columns() -> None:
    text = "a\tb\tc\naaaaaaaaa\tb\nx\tyyyyyyyyyyyyyyyyy\tz\n"
    # Column 1 has two blocks (line 2 has no cell there), each with its own width.
    assert tabulate(text) == "a\t\tb\tc\naaaaaaaaa\tb\nx\t\tyyyyyyyyyyyyyyyyy\tz\n"


def test_unterminated_last_line_and_empty_input() -> None:
    assert tabulate("") == ""
    assert tabulate("a\tb") == "a\tb"
    assert tabulate("ab\tc\nd\te") == "ab\tc\nd\te"


def test_width_counts_code_points() -> None:
    assert tabulate("é\tx\nabcdefg\ty\n") == "é\tx\nabcdefg\ty\n"
    assert tabulate("ééééééééé\tx\na\ty\n") == "ééééééééé\tx\na\t\ty\n"


def test_incremental_writes_equal_one_write() -> None:
    w = TabWriter()
    for piece in ("Identifier ", "\tSTATE\tSINCE", "\n", "m ", "\tup", " \t(t)", "\n"):
        w.write(piece)
    assert w.flush() == tabulate("Identifier \tSTATE\tSINCE\nm \tup \t(t)\n")
    assert w.flush() == ""


def test_formfeed_breaks_blocks() -> None:
    assert tabulate("a\tb\fccccccccccc\td\n") == "a\tb\nccccccccccc\td\n"


def _ref_column_end(lines: list[list[str]], col: int) -> int:
    return max(len(cells[col]) for cells in lines)


@given(
    st.lists(
        st.lists(st.text(alphabet="abc xyz/.", max_size=20), min_size=3, max_size=3),
        min_size=1,
        max_size=8,
    )
)
def test_property_single_block_alignment(rows: list[list[str]]) -> None:
    """Every row has two TAB-terminated cells: each column starts at the same multiple-of-8 offset."""
    text = "".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows)
    out = tabulate(text).split("\n")[:-1]
    w0 = -(-_ref_column_end(rows, 0) // 8) * 8
    w1 = -(-_ref_column_end(rows, 1) // 8) * 8
    for (a, b, c), line in zip(rows, out, strict=True):
        tabs0 = -(-(w0 - len(a)) // 8)
        tabs1 = -(-(w1 - len(b)) // 8)
        assert line == a + "\t" * tabs0 + b + "\t" * tabs1 + c
