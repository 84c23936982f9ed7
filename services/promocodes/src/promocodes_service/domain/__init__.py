"""The promo-code domain: rules, discount arithmetic and the aggregates. Standard library only."""
