"""Front ends other tools load: an `llm` plugin (simonw/llm) and a Ray Data predictor, thin over smolcli.api.

Each module imports its host library (llm, ray) itself; neither is a dependency of smolcli
(`pip install 'smolcli[llm]'`, `'smolcli[ray]'`).
"""
