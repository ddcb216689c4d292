"""Fuzz targets of every parser of untrusted bytes; run them with bench/fuzz/run.py."""
