"""Twelve-Factor apps: fetching source archives, unpacking them safely, reading the Procfile."""
