"""Sessions: isolated host processes that serve a product to the agent (Inedo seed).

Kept free of imports: ``herder.agent.sessions.host`` must start in milliseconds.
"""
