"""Watching a camera, a stream, a video file or a folder: a question asked about its frames as they come.

sources (what SOURCE names) -> feed (a reader thread, reopening dropped streams) -> mailbox (the newest frame,
never a queue) -> schedule (every N seconds, on change) -> loop (`watch`, one event per answer).
"""

from smolcli.api.watch.loop import WatchEvent, check_watch, open_feed, watch

__all__ = ["WatchEvent", "check_watch", "open_feed", "watch"]
