"""A `video_url` content part (the shape vLLM takes) as a clip's bytes: a data: URI, or a file under --allow-files.

The clip is opened and planned here, off the event loop, so that a file that is no video, has no
video stream or no frames is a 400 naming the part before the request queues for the model;
its frames are decoded by the model's thread, where a damaged stream is a 400 too.
"""

from __future__ import annotations

import urllib.parse

from smolcli.errors import BadInput
from smolcli.runtime.video.clip import VideoSampling, open_clip
from smolcli.serve.api_errors import bad_request
from smolcli.serve.image_input import data_uri_bytes, local_file_bytes
from smolcli.serve.settings import ServeSettings


def video_from_url(url, settings: ServeSettings, param: str) -> tuple[bytes, str]:
    """(the clip's bytes, where they came from); checked to be a clip PyAV can plan."""
    if not isinstance(url, str) or not url:
        raise bad_request("video_url.url must be a non-empty string", param, "invalid_type")
    if url.startswith("data:"):
        data, source = data_uri_bytes(url, settings.limits.max_video_bytes, param, "video"), "data: URI"
    elif urllib.parse.urlsplit(url).scheme.lower() == "file" or url.startswith("/"):
        data, source = local_file_bytes(url, settings, param, "video")
    else:
        raise bad_request(
            "video_url.url must be a data: URI (base64) or a file:// path under --allow-files",
            param,
            "invalid_video_url",
        )
    try:
        with open_clip(data) as clip:
            clip.plan(VideoSampling())
    except BadInput as error:
        raise bad_request(str(error).replace("video bytes", source), param, "invalid_video") from None
    return data, source
