"""Test aids of analytics: fakes and builders for its tests and benchmarks, never shipped
(installed in the development environment only, not in the image; nothing under src/ imports
them)."""
