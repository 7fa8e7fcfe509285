"""The manager: workers, tasks, compilers and parsers (the render-farm Manager API seed)."""
