"""Adapters to other libraries (imported on use; ``import shared`` does not import them)."""
