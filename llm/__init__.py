"""LLM Workbench core: tokenizers, the GPT model, data preparation, training, evaluation, generation.\n\nKnows nothing of the web app, the queue or the database."""
