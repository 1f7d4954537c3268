"""The library: load a model by name or path and ask it about images (smolcli.load)."""
