"""Leaf types of the domain: phone numbers, call records, billing rules. They import nothing from callrouter."""
