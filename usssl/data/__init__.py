"""usssl.data."""
