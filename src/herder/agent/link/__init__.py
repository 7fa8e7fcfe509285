"""The agent's link to a manager: registration, heartbeats, leased work, and what it trusts."""
