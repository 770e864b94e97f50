"""Benchmarks of LLM Workbench against its peers (Hugging Face transformers, tiktoken); run with `workbench bench`."""
