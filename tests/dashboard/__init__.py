"""Tests of streamfolio.dashboard: a package, so that its test modules (test_hostile.py) do not
clash with those of the same name in other test folders."""
