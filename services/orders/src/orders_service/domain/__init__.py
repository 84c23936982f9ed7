"""The order domain: rules, money and the Order aggregate. Standard library only, no I/O."""
