"""ecgbench-example: the worked example of docs/plugins.md, one plugin of each kind.

Nothing is imported here: ecgbench lists plugins from package metadata and imports a plugin's
module only when it is used, so this file stays empty of imports (and of torch).
"""
__version__ = "0.1.0"
