"""The user domain: rules and the User aggregate. Standard library only, no I/O."""
