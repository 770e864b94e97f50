"""The web layer: a FastAPI app with the REST API (`api.py`) and the Gradio UI (`ui/`) mounted on it.

`services.py` is the one place where both the API and the UI read and change things; `auth.py`
holds the login rules for both; `serve.py` starts the whole platform with one command; `cli.py`
is the `workbench` console script.
"""
