"""Built-in plugins of smtp-appliance, installed as ``appliance_plugins``.

Each is registered through the ``smtp_appliance`` entry-point group in
pyproject.toml, exactly like a third-party plugin; the core never imports them.
"""
