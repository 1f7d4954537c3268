"""Small utilities with no knowledge of models: atomic writes, the user cache folder, byte sizes as text."""
