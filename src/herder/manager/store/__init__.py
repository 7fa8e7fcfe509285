"""The manager's storage: tables, migrations, and the queries that claim work."""
