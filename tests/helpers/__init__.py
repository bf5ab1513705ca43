"""Test helpers, imported by the tests (conftest.py holds only fixtures and process-wide setup): made-up images and
data sets (images.py), configs as the entry points compose them and where the real data lives (configs.py), reading
what runs write (files.py). None of them needs ../shared or a network."""
