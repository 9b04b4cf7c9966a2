"""The bottom layer's helpers: rate-limited logs, daemon worker threads, JWT claims, the package version.

Nothing here imports another module of the package.
"""
