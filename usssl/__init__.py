"""usssl."""
