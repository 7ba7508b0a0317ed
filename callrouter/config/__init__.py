"""Configuration: YAML files parsed once into frozen, validated objects."""
