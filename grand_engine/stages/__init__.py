"""Built-in stages. Importing this package registers every stage by name."""

from grand_engine.stages import images, level1, level2, sa1b, scene_graph  # noqa: F401
