"""Models by name: what -m means, downloads through huggingface_hub, pull (download + convert) and the local store."""
