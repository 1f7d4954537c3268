"""Checks shared by the CLI tests."""

from __future__ import annotations

import signal


def one_line_error(result, *words: str, after_progress: bool = False) -> str:
    """A failure the user can act on: exit 1, one 'error:' line naming the problem, nothing on stdout.

    after_progress: progress lines (a download, a conversion) may come before the error line.
    """
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    if after_progress:
        assert result.stderr.count("error:") == 1 and "Traceback" not in result.output, result.output
    else:
        assert len(lines) == 1, result.stderr
    assert lines[-1].startswith("error: "), result.stderr
    assert "unexpected" not in lines[-1], lines[-1]
    for word in words:
        assert word in lines[-1], (word, lines[-1])
    return lines[-1]


def default_sigint() -> None:
    """preexec_fn for a child that a test interrupts with Ctrl-C. A non-interactive shell starts its background
    jobs with SIGINT ignored, exec keeps an ignored signal ignored, and Python then installs no KeyboardInterrupt
    handler: run from such a job, the child would never see the signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
