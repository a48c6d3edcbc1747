"""Helpers shared by the test modules (models, data, subprocess runs, local servers); no tests."""
