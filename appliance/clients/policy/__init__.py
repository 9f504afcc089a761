"""Postfix's policy delegation protocol: the sans-IO codec and a pooled client."""
