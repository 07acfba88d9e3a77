"""B1's baseline: a three-asset definitions module."""

import dagster as dg


@dg.asset
def a():
    return 1


@dg.asset
def b(a):
    return a + 1


@dg.asset
def c(b):
    return b + 1


defs = dg.Definitions(assets=[a, b, c])
