"""Knowing whether it worked: reports and simulation."""
