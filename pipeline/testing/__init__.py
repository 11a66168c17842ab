"""Tools for the demo, the tests and the benchmarks: a throwaway Dovecot and Amazon-format mail in our own words.

Nothing in the claim desk itself imports this package.
"""
