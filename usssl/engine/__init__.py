"""usssl.engine."""
