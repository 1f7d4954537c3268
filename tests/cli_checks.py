"""Checks shared by the CLI tests."""

from __future__ import annotations


def one_line_error(result, *words: str) -> str:
    """A failure the user can act on: exit 1, one 'error:' line naming the problem, nothing on stdout."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "unexpected" not in lines[0], lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]
