"""usssl.methods."""
