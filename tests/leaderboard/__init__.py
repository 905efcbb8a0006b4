"""Leaderboard test helpers: factories and fixtures (lb_factories), the CLI driver, a queue worker process."""
