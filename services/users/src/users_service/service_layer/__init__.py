"""Use cases of the user service: one method per command, dependencies passed in."""
