"""Test aids of promo_libs: in-memory fakes of its ports (memory), never shipped (installed
in the development environment only, not in the image; nothing under src/ imports them)."""
