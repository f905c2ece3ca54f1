"""Dataset registration, mappers and prepare helpers."""
