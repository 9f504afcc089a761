"""The plugin machinery: hook specifications, the plugin host that calls them,
verdicts, and the helpers a plugin uses (all re-exported by :mod:`appliance`)."""
