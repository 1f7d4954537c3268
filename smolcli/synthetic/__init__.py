"""Random-weight SmolVLM checkpoints, a byte tokenizer and photo-like images (numpy only), and the offline demo."""
