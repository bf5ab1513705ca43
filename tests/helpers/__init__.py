"""Reusable makers of test inputs (synthetic images and data sets) that need neither ../shared nor a network."""
