"""usssl.downstream."""
