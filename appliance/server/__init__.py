"""The gevent side: listeners, sessions, signals. Imports gevent."""
