"""usssl.models."""
