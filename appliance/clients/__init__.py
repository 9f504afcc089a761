"""Clients of the external services the appliance talks to: milters, Postfix policy
servers, Dovecot's auth service, Redis; peer addresses in one syntax (endpoints)."""
