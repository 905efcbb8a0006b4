"""The leaderboard: results store, benchmark spec, submission queue and worker, Gradio app.

Importing this package (or any module in it) has no side effects: no database is opened, no
server started, nothing downloaded. The store is opened by the caller, at request time.
"""

DB_URL_ENV = (
    "HARNESS_DB_URL"  # the store's URL; here so that the CLI can name it without importing SQLAlchemy
)
