"""Data for the course: the shapes world, 2-D toy point clouds and a sample photo.

Submodules are imported on use (`from sdedu.data.toy2d import make_moons`), so that
`import sdedu.data` stays light.
"""
