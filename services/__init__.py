"""qun backend services: each package is its rules, its models and its servicer."""
