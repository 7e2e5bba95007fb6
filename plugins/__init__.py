"""fedbench's built-in plugins, installed as the ``fedbench_plugins`` package.

Each module registers itself through the same hooks a third-party plugin uses,
via the ``[project.entry-points.fedbench]`` table of fedbench's pyproject.
"""
