"""LLM Workbench core: tokenizers, the GPT model, data preparation, training, evaluation, generation.

Knows nothing of the web app, the queue or the database: usable on its own from Python or the CLI.
"""
