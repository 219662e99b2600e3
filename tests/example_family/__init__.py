"""An example network family that lives outside the ``slimzoo`` package (docs/families.md): importing
``example_family.tinyfam`` registers ``tinyfam``."""
