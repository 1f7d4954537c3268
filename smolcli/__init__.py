"""smolcli: run SmolVLM vision-language models offline through llama.cpp."""

__version__ = "0.1.0"
