"""Identity for people and programs, and the audit log (docs/security.md).

People are ``users`` with a role; they sign in with a password (argon2id) or a one-time link and
get a server-side session. Programs use API keys scoped ``read`` or ``operate``. Every
security-relevant event goes to the audit log. Only hashes of tokens and secrets are stored.
Nothing here imports FastAPI or Dash: the API and the dashboard call these functions.
"""
