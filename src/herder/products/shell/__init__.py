"""The ``shell`` product: files (``fs``) and processes (``proc``) in a session's directory."""
