"""`smolcli bench`: measured runs of a random model in a release's shapes, its files, the encoder's FLOPs, the plan table."""
