"""The runtime every qun process shares: settings, rules, server, errors, storage."""
