"""ShapeWorld: the synthetic world, its tiny trained text-to-image model and its classifier.

Test, benchmark and demo infrastructure; never imported by the node pack itself.
"""
