"""usssl.speech."""
