"""Thin commands: parse flags into typed settings, call the library, report."""
